// The one HTTP request shape of the client: a JSON POST with a bearer token (`/poll`, `/send`).

import {abortedError, badResponse, httpError, networkError} from './errors.js';
import {isObject} from './util.js';

/**
 * POST `body` as JSON with a bearer token and return the parsed JSON answer.
 * Every failure becomes a RealtimeError classified for the retry policy.
 *
 * @param {typeof fetch} fetchFn
 * @param {string} url
 * @param {string} token
 * @param {unknown} body
 * @param {AbortSignal} [signal]
 * @returns {Promise<any>}
 */
export async function postJson(fetchFn, url, token, body, signal) {
    let response;
    let text;
    try {
        response = await fetchFn(url, {
            method: 'POST',
            headers: {'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json'},
            body: JSON.stringify(body),
            signal,
        });
        text = await response.text();
    } catch (err) {
        if (signal?.aborted) {
            throw abortedError(err);
        }
        throw networkError(`network error: ${err?.message ?? err}`, err);
    }
    const status = response.status;
    if (status < 200 || status > 299) {
        throw httpError(status, text, response.headers);
    }
    let data;
    try {
        data = JSON.parse(text);
    } catch {
        data = undefined;
    }
    if (!isObject(data)) {
        throw badResponse('answer is not a JSON object', status);
    }
    return data;
}
