/** Defaults that operators see in docs and --help; one place so they never disagree. */
export const DEFAULT_STATE_DIR = '/var/lib/ipferry';
export const DEFAULT_STORE = `sqlite:${DEFAULT_STATE_DIR}/ipferry.db`;
export const DEFAULT_TOKEN_FILE = `${DEFAULT_STATE_DIR}/api-token`;
/** A remote agent's credential for its hub's store, written when it joins. */
export const DEFAULT_CREDENTIAL_FILE = `${DEFAULT_STATE_DIR}/node-credential`;
export const DEFAULT_LISTEN = '127.0.0.1:7447';
export const DEFAULT_SERVER = 'http://127.0.0.1:7447';
export const DEFAULT_CONFIG_FILE = '/etc/ipferry/agent.yaml';
/** The UDP port a node's tunnel listens on (WireGuard's usual one). */
export const DEFAULT_TUNNEL_PORT = 51820;
