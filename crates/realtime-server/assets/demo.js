// The demo page script: see demo.html.
