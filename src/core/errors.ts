/**
 * The one registry of ipferry error codes. API, CLI, agent and store all raise `IpferryError`
 * with a code from here, so a failure has the same code, HTTP status, message and hint wherever
 * it is seen. Messages never contain secrets (tokens, private keys): callers pass details, not
 * credentials.
 */

export interface ErrorSpec {
  /** HTTP status the API answers with. */
  readonly status: number;
  /** One sentence; `{name}` placeholders are filled from the error's params. */
  readonly message: string;
  /** What the user can do about it. */
  readonly hint: string;
}

export const ERRORS = {
  IPF_E_VALIDATION: {
    status: 400,
    message: 'The request is invalid: {summary}',
    hint: 'Correct each field named and send it again: every problem is reported at once.',
  },
  IPF_E_BAD_ADDRESS: {
    status: 400,
    message: 'Not a valid IP address: {input}',
    hint: 'Write IPv4 as four decimal numbers without leading zeros (192.0.2.10) and IPv6 in standard notation (2001:db8::10).',
  },
  IPF_E_LEASE_NOT_FOUND: {
    status: 404,
    message: 'Lease {lease} does not exist (expired or revoked).',
    hint: 'Grant a new lease: the keys attached to this one are gone with it.',
  },
  IPF_E_NOT_FOUND: {
    status: 404,
    message: 'No such route: {method} {url}',
    hint: 'See the API reference served at /docs.',
  },
  IPF_E_POOL_NOT_FOUND: {
    status: 404,
    message: 'Pool {pool} does not exist.',
    hint: 'List pools with `ipferry pool list`.',
  },
  IPF_E_POOL_EXISTS: {
    status: 409,
    message: 'Pool {pool} already exists.',
    hint: 'Choose another name, or delete the existing pool first.',
  },
  IPF_E_POOL_OVERLAP: {
    status: 409,
    message: 'Pool {pool} overlaps pool {other} at {address}.',
    hint: 'Every address belongs to at most one pool: remove the overlapping addresses.',
  },
  IPF_E_POOL_IN_USE: {
    status: 409,
    message: 'Pool {pool} still has {count} allocated floating IP(s).',
    hint: 'Release its floating IPs first (`ipferry fip list`, `ipferry fip release`).',
  },
  IPF_E_POOL_EXHAUSTED: {
    status: 409,
    message: 'No free address left in {scope}.',
    hint: 'Release unused floating IPs, or add addresses to a pool (`ipferry pool update POOL --cidr PREFIX`).',
  },
  IPF_E_ADDRESS_NOT_IN_POOL: {
    status: 400,
    message: 'Address {address} is not in {scope}.',
    hint: 'Pick an address from `ipferry ippool`, or add it to a pool: `ipferry pool update POOL --address {address}`, or `--shared {address}` for the gateway’s own address (port forwards only).',
  },
  IPF_E_ADDRESS_OWN: {
    status: 409,
    message:
      'Address {address} is an address of gateway {node} itself; a pool may hold it only as shared.',
    hint: 'Give it with --shared: port forwards go to it and the gateway keeps its own ports. To hand an address the gateway still holds to a server elsewhere (docs/migration.md), put it in as a prefix (`--cidr {address}/32`, /128 for IPv6): its FIP waits in ERROR until the gateway lets go of it.',
  },
  IPF_E_ADDRESS_ALLOCATED: {
    status: 409,
    message: 'Address {address} of pool {pool} is allocated as a floating IP.',
    hint: 'Release it first (`ipferry fip release {address}`), then remove it from the pool.',
  },
  IPF_E_ADDRESS_SHARED: {
    status: 409,
    message:
      'Address {address} is the gateway’s own shared address: only port forwards are allowed on it.',
    hint: 'Use `ipferry forward add` for single ports, or use an address of its own for nat/routed.',
  },
  IPF_E_FIP_NOT_FOUND: {
    status: 404,
    message: 'Floating IP {address} is not allocated.',
    hint: 'Allocate it first with `ipferry fip allocate --address {address}`.',
  },
  IPF_E_FIP_NOT_IN_POOL: {
    status: 404,
    message: 'Address {address} is not a floating IP: no pool holds it.',
    hint: 'Make it one: add it to a pool — `ipferry pool update POOL --shared {address}` for the gateway’s own address (port forwards only), `--address {address}` for an address of its own, or a new pool with `ipferry pool create … --shared {address}` — then `ipferry fip allocate --address {address}`.',
  },
  IPF_E_FIP_NOT_ALLOCATED: {
    status: 404,
    message: 'Floating IP {address} is not allocated: it was released already, or never allocated.',
    hint: 'There is nothing to release; `ipferry fip list` shows the allocated floating IPs.',
  },
  IPF_E_FIP_IN_USE: {
    status: 409,
    message: 'Floating IP {address} is already allocated.',
    hint: 'Choose another address, or omit --address to take any free one.',
  },
  IPF_E_FIP_ASSOCIATED: {
    status: 409,
    message: 'Floating IP {address} is already associated with {target}.',
    hint: 'Use `ipferry fip move` (or --allow-reassociation) to re-target it, or disassociate it first.',
  },
  IPF_E_FIP_NOT_ASSOCIATED: {
    status: 409,
    message: 'Floating IP {address} is not associated.',
    hint: 'Associate it first with `ipferry fip associate`.',
  },
  IPF_E_FIP_STILL_ASSOCIATED: {
    status: 409,
    message: 'Floating IP {address} is still associated with {target}.',
    hint: 'Disassociate it first, or release with --force.',
  },
  IPF_E_FIP_CHANGED: {
    status: 409,
    message: 'Floating IP {address} changed since revision {revision}: it was not released.',
    hint: 'Read it again (`ipferry fip show {address}`) and decide again whether to release it.',
  },
  IPF_E_FIP_MODE: {
    status: 409,
    message: 'Floating IP {address} is associated in {mode} mode: {reason}',
    hint: 'Port forwards need a FIP in ports mode (or not associated); disassociate it first to change mode.',
  },
  IPF_E_PORT_RESERVED: {
    status: 409,
    message: '{proto} port {port} of {address} is used by the gateway itself.',
    hint: 'The gateway keeps its own services (SSH, the ipferry API, tunnels) on its shared address: forward another port, or change reservedPorts in the agent config.',
  },
  IPF_E_ROUTED_TO_GATEWAY: {
    status: 409,
    message:
      'Floating IP {address} cannot be routed to {node}: it is the gateway of its pool {pool}.',
    hint: 'Routed mode carries a FIP through a tunnel to another node: name that node with --node. For a server on the gateway’s own LAN use nat or ports mode (`ipferry fip associate {address} --target IP --allow-reassociation`).',
  },
  IPF_E_TARGET_IN_USE: {
    status: 409,
    message: 'Target {target} already has floating IP {address} in {mode} mode.',
    hint: 'A target can own one 1:1 floating IP per family; move or disassociate the other one first.',
  },
  IPF_E_FORWARD_NOT_FOUND: {
    status: 404,
    message: 'Floating IP {address} has no port forward {id}.',
    hint: 'List forwards with `ipferry forward list {address}`.',
  },
  IPF_E_FORWARD_CONFLICT: {
    status: 409,
    message: 'Port forward {proto} {ports} on {address} overlaps forward {id}.',
    hint: 'Each external protocol/port of a floating IP is forwarded to one target only.',
  },
  IPF_E_CLIENT_TOKEN_REUSED: {
    status: 409,
    message: 'Client token {token} was already used for a different request.',
    hint: 'Use a new client token for a new allocation.',
  },
  IPF_E_NODE_NOT_FOUND: {
    status: 404,
    message: 'Node {node} is not known.',
    hint: 'Start `ipferry agent --node {node}` on that host, or check `ipferry node list`.',
  },
  IPF_E_NODE_EXISTS: {
    status: 409,
    message: 'Node {node} is already registered.',
    hint: 'Choose another name, or remove the node first (`ipferry node remove {node}`).',
  },
  IPF_E_RENDER_STALE: {
    status: 409,
    message: '{file} is stale: {summary}',
    hint: 'Render it again (`ipferry node render {node} --os {os} > FILE`) and apply it on the host.',
  },
  IPF_E_NOT_FOUND_MAC: {
    status: 404,
    message: 'No address is known for MAC {mac}.',
    hint: 'Pin the MAC to an address in a pool (`--address IP=MAC`), or check the host is on the gateway’s LAN.',
  },
  IPF_E_CONFLICT: {
    status: 409,
    message: 'The state changed while the request ran ({what}); it was not applied.',
    hint: 'Retry the request.',
  },
  IPF_E_UNAUTHORIZED: {
    status: 401,
    message: 'Missing or invalid API token.',
    hint: 'Pass a token with --token-file or IPFERRY_TOKEN: the agent writes one to its own --token-file when it first starts (by default /var/lib/ipferry/api-token on its host).',
  },
  IPF_E_FORBIDDEN: {
    status: 403,
    message: 'This token may not do that: {reason}',
    hint: 'Use a read-write admin token for changes; a node credential may only read desired state and write its own registration and status.',
  },
  IPF_E_JOIN_REFUSED: {
    status: 401,
    message: 'The join token was refused: {reason}',
    hint: 'Create a new one on the hub with `ipferry node join-token create` (tokens are single-use and expire), then start the agent with it.',
  },
  IPF_E_CONFIG: {
    status: 400,
    message: 'Configuration {source} is invalid: {summary}',
    hint: 'Fix the file or flag named; see docs/configuration.md.',
  },
  IPF_E_USAGE: {
    status: 400,
    message: '{summary}',
    hint: 'Run the command with --help.',
  },
  IPF_E_TOKEN_FILE: {
    status: 400,
    message: 'Token file {path} {problem}.',
    hint: 'The agent writes an API token to its own --token-file when it first starts (by default /var/lib/ipferry/api-token on its host): copy a token from there into this file (one per line, the first is used), or give the token itself in IPFERRY_TOKEN.',
  },
  IPF_E_SECRET_FILE: {
    status: 400,
    message: 'Secret file {path} {problem}.',
    hint: 'Make it readable by its owner only: chmod 600 {path} (a token file holds one token per line).',
  },
  IPF_E_RECORD_UNUSABLE: {
    status: 409,
    message: 'The stored record {key} cannot be used: {reason}',
    hint: 'Something wrote it around the API (an older version, a direct store write). Write it again through the API, or delete it; agents leave it out meanwhile (ipferry plan names it).',
  },
  IPF_E_STORE: {
    status: 503,
    message: 'The store is unavailable: {reason}',
    hint: 'Check the --store setting and that the store is reachable.',
  },
  IPF_E_STORE_ACCESS: {
    status: 503,
    message: 'etcd at {endpoints} cannot be used with the access given: {reason}',
    hint: 'Check the etcd options against the cluster: --etcd-ca is the CA of etcd’s server certificate, --etcd-cert and --etcd-key a client certificate signed by etcd’s --trusted-ca-file, --etcd-user and --etcd-password-file an etcd user whose role may read and write the prefix /ipferry (docs/configuration.md#etcd-over-tls-with-authentication).',
  },
  IPF_E_STORE_COMPACTED: {
    status: 410,
    message: 'Revision {revision} is compacted (oldest kept: {oldest}).',
    hint: 'Read the current state with a list and watch from its revision.',
  },
  IPF_E_STORE_NOT_EMPTY: {
    status: 409,
    message: 'The store is not empty ({count} key(s), such as {key}); nothing was imported.',
    hint: 'Import a backup onto a new, empty store (a new sqlite: file, an etcd cluster without /ipferry keys), with no agent running on it; see docs/backup.md.',
  },
  IPF_E_IMPORT_PARTIAL: {
    status: 500,
    message:
      'The import stopped after writing {written} of {total} record(s) ({reason}), and what it wrote could not be taken back ({cleanup}).',
    hint: 'Empty the store (etcdctl del --prefix /ipferry/), then import again; see docs/backup.md.',
  },
  IPF_E_UNREACHABLE: {
    status: 503,
    message: 'Cannot reach the agent at {server}: {reason}',
    hint: 'Check that `ipferry agent` runs and that --server (or IPFERRY_SERVER) points at it.',
  },
  IPF_E_NOT_TLS: {
    status: 503,
    message: 'The agent at {server} does not speak TLS.',
    hint: 'Use http:// in --server (or IPFERRY_SERVER), or start the agent with --tls-cert and --tls-key.',
  },
  IPF_E_TLS: {
    status: 400,
    message: 'TLS setup failed: {reason}',
    hint: 'Give both --tls-cert and --tls-key (PEM files); clients verify with --ca-file.',
  },
  IPF_E_NOT_APPLIED: {
    status: 502,
    message: 'The write (revision {revision}) is stored but was not applied: {reason}.',
    hint: 'The store keeps the write: fix the cause the agent gives (`ipferry fip show`, `ipferry node show NODE`), then write again or undo it.',
  },
  IPF_E_APPLY_TIMEOUT: {
    status: 504,
    message:
      'The write (revision {revision}) is stored but {nodes} had not applied it after {timeout}.',
    hint: 'Its agents may still apply it: check that they are alive and keeping up (`ipferry node show NODE`), or wait longer with --timeout.',
  },
  IPF_E_KERNEL: {
    status: 500,
    message: 'This host cannot run the Linux dataplane: {reason}',
    hint: 'Install the named Debian packages (apt-get install nftables iproute2 conntrack procps) and use a kernel with nftables NAT; or run with --dataplane fake.',
  },
  IPF_E_DATAPLANE: {
    status: 500,
    message: 'The dataplane refused the change: {reason}',
    hint: 'See the FIP status and the agent log; the previous kernel state was kept.',
  },
  IPF_E_TUNNEL_ENDPOINT: {
    status: 400,
    message: 'Invalid tunnel peer endpoint: {summary}',
    hint: 'Write an endpoint as host:port (192.0.2.1:51820, gw.example.net:51820) or [IPv6]:port ([2001:db8::1]:51820), with a port from 1 to 65535.',
  },
  IPF_E_TUNNEL_MTU: {
    status: 400,
    message: 'The tunnel MTU does not fit: {summary}',
    hint: 'WireGuard costs 60 bytes over an IPv4 underlay and 80 over IPv6: use at most the underlay MTU minus that, and at least 1280 when the tunnel carries IPv6.',
  },
  IPF_E_TUNNEL_KEY: {
    status: 500,
    message: 'WireGuard private key file {path} {problem}.',
    hint: 'ipferry creates the key itself (mode 0600 in a 0700 directory): fix the file mode, or remove the file to have a new key made and give the peers the new public key.',
  },
  IPF_E_TUNNEL_DRIVER: {
    status: 500,
    message: 'This host cannot run WireGuard tunnels: {reason}',
    hint: 'Load the wireguard kernel module, or install the Debian packages wireguard-tools and wireguard-go.',
  },
  IPF_E_MESH_OVERLAP: {
    status: 400,
    message: 'The overlay {overlay} overlaps LAN {lan} of site {site} at {address}.',
    hint: 'Choose an overlay prefix that no site uses (Neti used 192.168.0.0/18), or correct the site’s LANs.',
  },
  IPF_E_MESH_NOT_CONFIGURED: {
    status: 404,
    message: 'No mesh policy is set.',
    hint: 'Set one with `ipferry mesh set --file POLICY.yaml` (see docs/mesh.md).',
  },
  IPF_E_MESH_NO_TRIAL: {
    status: 409,
    message:
      'The mesh policy change of {changedAt} was not confirmed by its deadline, {deadline}: every node went back to the policy before it.',
    hint: 'To apply it after all, set it again (`ipferry mesh set --file POLICY.yaml`, with --confirm-within for a new trial); `ipferry mesh confirm --holds-only` releases held membership changes without confirming anything.',
  },
  IPF_E_OVERLAY_EXHAUSTED: {
    status: 409,
    message: 'No free overlay address left in {overlay} for node {node}.',
    hint: 'Remove nodes that are gone for good (`ipferry node remove`), or widen the overlay prefix.',
  },
  IPF_E_NODE_IN_USE: {
    status: 409,
    message: 'Node {node} is still in use: {uses}.',
    hint: 'Move its floating IPs elsewhere and give its pools another gateway first.',
  },
  IPF_E_INVENTORY: {
    status: 400,
    message: '{source} line {line}: {reason}',
    hint: 'Write one host per line: NAME ADDRESS[,ADDRESS…] [site=SITE] ("#" starts a comment), or give the host table Neti\'s neti_util.py prints, header line included.',
  },
  IPF_E_LAB_NOT_FOUND: {
    status: 404,
    message: 'There is no lab named {name}.',
    hint: 'List the labs with `ipferry lab list`; build one with `ipferry lab up SCENARIO --name {name}`.',
  },
  IPF_E_LAB_EXISTS: {
    status: 409,
    message: 'Lab {name} exists already ({condition}).',
    hint: 'Choose another name with --name, or remove it first with `ipferry lab down {name}`.',
  },
  IPF_E_LAB_START: {
    status: 500,
    message: 'The lab could not be built: {reason}',
    hint: 'Everything the command had built and started was removed again. Check that setup installed the tools (scripts/setup.sh); `ipferry lab down --all` removes what a killed run left.',
  },
  IPF_E_LAB_NO_ANSWER: {
    status: 503,
    message: 'Nothing answered {protocol}/{port} at {address} from {from}.',
    hint: 'Lab hosts answer on tcp/80 and udp/5353 (`ipferry lab list` shows whether their echo servers run); a floating IP answers once its agent made it ACTIVE (`ipferry fip list`).',
  },
  IPF_E_INTERNAL: {
    status: 500,
    message: 'Internal error: {reason}',
    hint: 'This is a bug; please report it with the agent log.',
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** One problem found by validation: where it is (a dotted path) and what is wrong. */
export interface Problem {
  readonly path: string;
  readonly message: string;
}

export type ErrorParams = Readonly<Record<string, string | number>>;

export class IpferryError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly hint: string;
  readonly params: ErrorParams;
  readonly problems: readonly Problem[];

  constructor(code: ErrorCode, params: ErrorParams = {}, problems: readonly Problem[] = []) {
    const spec: ErrorSpec = ERRORS[code];
    super(fill(spec.message, params));
    this.name = 'IpferryError';
    this.code = code;
    this.status = spec.status;
    this.hint = fill(spec.hint, params);
    this.params = params;
    this.problems = problems;
  }

  toJSON(): ErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        hint: this.hint,
        ...(this.problems.length > 0 ? { problems: this.problems } : {}),
      },
    };
  }
}

/** The wire form of an error, used by the API and understood by the CLI. */
export interface ErrorBody {
  error: { code: string; message: string; hint: string; problems?: readonly Problem[] };
}

export function validationError(problems: readonly Problem[]): IpferryError {
  const first = problems[0];
  const summary =
    problems.length === 1 && first
      ? `${first.path}: ${first.message}`
      : `${problems.length} problems`;
  return new IpferryError('IPF_E_VALIDATION', { summary }, problems);
}

export function isIpferryError(e: unknown): e is IpferryError {
  return e instanceof IpferryError;
}

function fill(template: string, params: ErrorParams): string {
  return template.replace(/\{(\w+)\}/g, (whole, key: string) =>
    key in params ? String(params[key]) : whole,
  );
}
