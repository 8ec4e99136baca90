// Small helpers shared by the transports and the client.

/** @param {unknown} value @returns {value is Record<string, any>} */
export function isObject(value) {
    return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The `{channel, token}` pairs of the page config, as the server wants them. @param {PageConfig} config */
export function subscriptionRefs(config) {
    return config.subscriptions.map((s) => ({channel: s.channel, token: s.token}));
}

/** @param {Record<string, any> | undefined} object @returns {Record<string, any>} */
export function withoutUndefined(object) {
    return Object.fromEntries(Object.entries(object ?? {}).filter(([, v]) => v !== undefined));
}
