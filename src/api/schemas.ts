/**
 * The schemas of the API's requests and responses, as TypeBox values: each is a JSON schema
 * (for Fastify's checks, its serializer and the OpenAPI document) and a TypeScript type
 * (`Static<…>`) at once. contract.ts puts them together, route by route.
 *
 * Requests: a first check of shape (unknown fields are refused: a typo like `allowReasociation`
 * must not be silently ignored). Meaning — addresses, ranges, overlaps — is checked by
 * core/validate.ts, which reports every problem at once with the same codes as the CLI. Enums
 * and alternatives are written as plain `enum`/`oneOf` (not TypeBox unions, which compile to
 * `anyOf` of constants) so that a refusal reads as it always has.
 *
 * Responses: Fastify's serializer writes only the fields a schema names and refuses to write an
 * object without a field it requires, so every response object here is open (extra fields pass
 * as they are) and requires nothing (a record an older agent stored may lack a newer field). The
 * fields they name document the answer; its TypeScript type is the one the control plane builds
 * (service/views.ts, core/model.ts), bound here with `Type.Unsafe`.
 */
import type { AppliedReport } from '../core/applied.js';
import type { AuditEvent } from '../core/events.js';
import { Type, type SchemaOptions, type TProperties, type TUnsafe } from '@sinclair/typebox';
import type { MeshAudit, MeshPolicy, MeshPolicyRecord } from '../core/mesh.js';
import type {
  AssociationMode,
  FipState,
  NodeView,
  PortForward,
  Protocol,
  TunnelHealth,
} from '../core/model.js';
import type { MeshConfirmResult, MeshView } from '../service/mesh.js';
import type {
  ArpResponse,
  FipView,
  IppoolEntryView,
  PlanResponse,
  PoolView,
} from '../service/views.js';

/** A join token's longest life (30 days). */
export const JOIN_TOKEN_TTL_MAX_SECONDS = 30 * 86400;
/** At most this many URLs in a join token (a host with many addresses would make it unwieldy). */
export const JOIN_TOKEN_MAX_URLS = 8;

// Building blocks -----------------------------------------------------------------------------

/** A string of one of `values`, as `{ type: 'string', enum }`. */
function oneOfStrings<T extends string>(values: readonly T[], options: SchemaOptions = {}) {
  return Type.Unsafe<T>({ type: 'string', enum: [...values], ...options });
}

const address = Type.String({ description: 'IPv4 or IPv6 address', examples: ['203.0.113.10'] });
const name = Type.String({ description: 'lower-case name', examples: ['gw1'] });
const text = Type.String({ maxLength: 256 });
const strings = Type.Array(Type.String());
const tags = strings;
const targetRanges = Type.Array(Type.String(), {
  description:
    "CIDRs the FIPs of the pool may forward to (IP Floater's PRIVATE_IP_RANGES); absent: anywhere",
  examples: [['192.168.1.0/24']],
});

// Params and queries --------------------------------------------------------------------------

/**
 * A path parameter is looked up in the store: one holding a control character (a NUL the store
 * refuses as a key, a line break) is a bad request, not a store failure.
 */
const PRINTABLE = '^[^\\u0000-\\u001f\\u007f]*$';
const param = (schema: { description?: string; examples?: string[] } = {}) =>
  Type.String({ ...schema, pattern: PRINTABLE });

export const nameParams = Type.Object({
  name: param({ description: 'lower-case name', examples: ['gw1'] }),
});
export const addressParams = Type.Object({
  address: param({ description: 'IPv4 or IPv6 address', examples: ['203.0.113.10'] }),
});
export const forwardParams = Type.Object({
  address: param({ description: 'IPv4 or IPv6 address', examples: ['203.0.113.10'] }),
  id: param(),
});
export const macParams = Type.Object({ mac: param() });

export const listFipsQuery = Type.Object(
  { pool: Type.Optional(name) },
  { additionalProperties: false },
);
export const releaseQuery = Type.Object(
  { force: Type.Optional(oneOfStrings(['true', 'false'])) },
  { additionalProperties: false },
);

export const appliedQuery = Type.Object(
  {
    revision: Type.String({
      pattern: '^[1-9][0-9]{0,15}$',
      description: 'the store revision of the write (its answer header `ipferry-revision`)',
    }),
    fip: Type.Optional(Type.String({ description: 'a floating IP the write changed or released' })),
    pool: Type.Optional(name),
    nodes: Type.Optional(
      Type.String({
        pattern: '^[a-z0-9.-]+(,[a-z0-9.-]+)*$',
        description: 'nodes, comma-separated',
      }),
    ),
    all: Type.Optional(oneOfStrings(['true', 'false'], { description: 'every live agent' })),
    wait: Type.Optional(
      Type.String({
        pattern: '^[0-9]{1,6}(ms|s)$',
        description: 'how long to wait for a final answer (at most 25s), e.g. 10s or 500ms',
      }),
    ),
  },
  { additionalProperties: false },
);

export const eventsQuery = Type.Object(
  {
    after: Type.Optional(
      Type.String({
        pattern: '^[0-9]{1,15}$',
        description: 'only events after this sequence number',
      }),
    ),
    limit: Type.Optional(
      Type.String({
        pattern: '^([1-9][0-9]{0,2}|1000)$',
        description: 'the latest N (at most 1000)',
      }),
    ),
    wait: Type.Optional(
      Type.String({
        pattern: '^[0-9]{1,6}(ms|s)$',
        description: 'with none yet: wait up to this long for the next (at most 25s)',
      }),
    ),
  },
  { additionalProperties: false },
);

// Request bodies ------------------------------------------------------------------------------

export const createPoolBody = Type.Object(
  {
    name,
    gateway: Type.String({ ...name, description: 'node whose agent serves the pool' }),
    delivery: Type.Optional(
      oneOfStrings(['routed', 'onlink'], {
        description: 'routed by upstream to the gateway (default), or on-link on `uplink`',
      }),
    ),
    uplink: Type.Optional(Type.String({ description: 'uplink interface of an on-link pool' })),
    entries: Type.Optional(
      Type.Array(Type.String(), { description: 'CIDR, FIRST-LAST, IP or IP=MAC' }),
    ),
    shared: Type.Optional(
      Type.Array(address, { description: "the gateway's own addresses: port forwards only" }),
    ),
    targetRanges: Type.Optional(targetRanges),
    description: Type.Optional(text),
    tags: Type.Optional(tags),
  },
  { additionalProperties: false },
);

/**
 * What is given changes, the rest stays. Gateway, delivery and the ranges already in the pool
 * cannot change (delete and re-create the pool for that).
 */
export const updatePoolBody = Type.Object(
  {
    addEntries: Type.Optional(
      Type.Array(Type.String(), { description: 'entries to add: CIDR, FIRST-LAST, IP or IP=MAC' }),
    ),
    addShared: Type.Optional(
      Type.Array(address, {
        description: "the gateway's own addresses to add: port forwards only",
      }),
    ),
    removeAddresses: Type.Optional(
      Type.Array(address, {
        description: 'single-address entries to remove; refused while a FIP holds one',
      }),
    ),
    description: Type.Optional(
      Type.String({ ...text, description: 'the new description; "" removes it' }),
    ),
    tags: Type.Optional(
      Type.Array(Type.String(), { description: 'the new tags, replacing the old ones' }),
    ),
    targetRanges: Type.Optional(
      Type.Array(Type.String(), {
        description:
          'the new target ranges, replacing the old ones ([] allows any target); refused while a FIP of the pool goes outside them',
      }),
    ),
  },
  { additionalProperties: false },
);

export const allocateBody = Type.Object(
  {
    pool: Type.Optional(name),
    address: Type.Optional(address),
    family: Type.Optional(
      Type.Unsafe<4 | 6>({
        type: 'integer',
        enum: [4, 6],
        description: 'only addresses of this IP version',
      }),
    ),
    clientToken: Type.Optional(
      Type.String({
        description:
          'idempotency token: a retry returns the same FIP; the store keeps only its SHA-256, and no answer shows it',
      }),
    ),
    description: Type.Optional(text),
    tags: Type.Optional(tags),
  },
  { additionalProperties: false },
);

export const associateBody = Type.Object(
  {
    target: Type.Optional(
      Type.String({
        ...address,
        description: 'where the FIP goes; required but in routed mode, where it is the FIP itself',
      }),
    ),
    node: Type.Optional(name),
    mode: Type.Optional(oneOfStrings<AssociationMode>(['nat', 'routed', 'ports'])),
    masquerade: Type.Optional(Type.Boolean()),
    allowReassociation: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

export const moveBody = Type.Object(
  {
    target: Type.Optional(
      Type.String({
        ...address,
        description: 'the new target; a routed FIP omits it (its target is the FIP itself)',
      }),
    ),
    node: Type.Optional(name),
  },
  { additionalProperties: false },
);

export const addForwardBody = Type.Object(
  {
    protocol: oneOfStrings<Protocol>(['tcp', 'udp']),
    port: Type.Unsafe<string | number>({
      oneOf: [{ type: 'string' }, { type: 'integer' }],
      description: 'P or P-Q',
    }),
    targetPort: Type.Optional(Type.Integer()),
    target: address,
    node: Type.Optional(name),
    description: Type.Optional(text),
  },
  { additionalProperties: false },
);

export const addNodeBody = Type.Object(
  {
    name,
    unmanaged: Type.Boolean({ description: 'must be true: a node with an agent registers itself' }),
    publicKey: Type.String({
      maxLength: 64,
      description: "the host's WireGuard public key (wg pubkey); its private key stays there",
    }),
    endpoint: Type.Optional(
      Type.String({
        maxLength: 300,
        description: 'host:port the gateway reaches it at (none: it calls the gateway)',
      }),
    ),
    addresses: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 64 })),
    site: Type.Optional(name),
    tunnelDriver: Type.Optional(
      Type.String({ maxLength: 16, description: 'wireguard (the only driver without an agent)' }),
    ),
  },
  { additionalProperties: false },
);

export const createJoinTokenBody = Type.Object(
  {
    ttlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: JOIN_TOKEN_TTL_MAX_SECONDS })),
    node: Type.Optional(Type.String({ description: 'only this node may join with it' })),
    allowAddresses: Type.Optional(
      Type.Array(Type.String({ maxLength: 64 }), {
        maxItems: 64,
        description:
          'prefixes the joined node may register its addresses in (default: any address outside the pools and the mesh overlay)',
      }),
    ),
    urls: Type.Optional(
      Type.Array(Type.String({ pattern: '^https?://[^\\s/?#@]+(/[^\\s?#]*)?$', maxLength: 512 }), {
        maxItems: JOIN_TOKEN_MAX_URLS,
        description: 'where remote agents reach this hub (default: its listen address)',
      }),
    ),
  },
  { additionalProperties: false },
);

// The fleet mesh -------------------------------------------------------------------------------
// The policy's parts are described here but not checked: core/mesh.ts (validateMeshPolicy) checks
// keys, types, prefixes, ports, address pairs and overlaps, and reports every problem at once
// with its path. A check here would answer first with only its own share (an unknown key), and
// the rest would come one round later. So the layers are described in words (ajv's strict mode
// wants `type: object` beside `properties`, and a type is a check).

const LAYER =
  'an object: `openPorts` (a list of `tcp/443`, `udp/53`, `tcp/8000-8010`: open to anyone), `sshAllow` (a list of prefixes always let in to TCP port 22, ahead of any drop), `rejectAll` (true or false: drop what is neither fleet, nor an open port, nor failsafe SSH), `natOverrides` (overlay address → the IPv4 address to reach it at, instead of the member’s own)';

const meshLayer = {
  description: `a layer, ${LAYER}`,
  examples: [{ openPorts: ['tcp/443'], sshAllow: ['192.0.2.0/24'], rejectAll: false }],
};

export const meshPolicy = Type.Unsafe<MeshPolicy>({
  type: 'object',
  description:
    'The fleet mesh policy: fleet, then site, then node layers (docs/mesh.md); its problems are reported all at once (IPF_E_VALIDATION, IPF_E_MESH_OVERLAP)',
  properties: {
    overlay: {
      description:
        'required: the IPv4 prefix the overlay addresses come from, /16 to /29, inside private address space (10/8, 172.16/12, 192.168/16, 100.64/10 or 198.18/15)',
      examples: ['192.168.0.0/18'],
    },
    maxChange: {
      description:
        'a whole number, 0 or more: the most members one change may drop before it is held for confirmation',
    },
    fleet: meshLayer,
    sites: {
      description: `keyed by site name, each ${LAYER}, and \`lans\` (a list of the site's private prefixes; the overlay may not overlap them)`,
      examples: [{ fra: { lans: ['10.1.0.0/16'], openPorts: ['udp/53'] } }],
    },
    nodes: {
      description: `keyed by node name, each ${LAYER}`,
      examples: [{ web7: { natOverrides: { '192.168.3.9': '198.51.100.9' } } }],
    },
  },
});

export const setMeshPolicyBody = Type.Object(
  {
    /** The whole policy (docs/mesh.md); it replaces the one in the store. */
    policy: meshPolicy,
    confirmWithinSeconds: Type.Optional(
      Type.Integer({
        description:
          'seconds until every node goes back to the previous policy unless confirmed (1 to a week; checked with the policy)',
      }),
    ),
  },
  { additionalProperties: false },
);

export const confirmMeshBody = Type.Object(
  {
    holdsOnly: Type.Optional(
      Type.Boolean({
        description:
          'release held membership changes only: confirm no trial, and refuse none that ran out',
      }),
    ),
  },
  { additionalProperties: false },
);

export const auditMeshBody = Type.Object(
  {
    inventory: Type.Optional(
      Type.String({
        description: 'one host per line: NAME ADDRESS[,ADDRESS…] [site=SITE]; "#" comments',
        examples: ['web1 10.0.0.11,203.0.113.11 site=fra\n'],
      }),
    ),
    source: Type.Optional(
      Type.String({ maxLength: 256, description: 'its name in errors (a file name)' }),
    ),
  },
  { additionalProperties: false },
);

// Responses -----------------------------------------------------------------------------------

/** An open object naming `properties`, none required (see the preamble). */
function open(properties: TProperties = {}, options: SchemaOptions = {}) {
  return Type.Partial(Type.Object(properties, { additionalProperties: true, ...options }));
}

/** An open object whose TypeScript type is `T`, the type the control plane builds. */
function view<T>(properties: TProperties, options: SchemaOptions = {}): TUnsafe<T> {
  return Type.Unsafe<T>(open(properties, options));
}

function list<T>(items: TUnsafe<T>, options: SchemaOptions = {}): TUnsafe<T[]> {
  return Type.Unsafe<T[]>(Type.Array(items, options));
}

const str = Type.String();
const int = Type.Integer();
const bool = Type.Boolean();

export const healthResponse = view<{ readonly ok: boolean; readonly node: string }>({
  ok: bool,
  node: str,
});

export const versionResponse = view<{ readonly version: string; readonly node: string }>({
  version: str,
  node: str,
});

const tunnelHealth = view<TunnelHealth>(
  { name: str, checkedAt: str, driver: str, peers: Type.Array(open()) },
  { description: "a node's tunnel, as its agent last saw it" },
);

export const statusResponse = view<{
  readonly node: string;
  readonly version: string;
  readonly store: { readonly kind: string; readonly revision: number };
  readonly dataplane: {
    readonly kind: string;
    readonly lastApply?: string;
    readonly lastError?: string;
    readonly realisedRevision?: number;
    /** Store records this agent leaves out because it cannot use them. */
    readonly skippedRecords?: readonly { readonly key: string; readonly reason: string }[];
  };
  readonly fips: Record<FipState, number>;
  readonly nodes: { readonly total: number; readonly alive: number };
  /** This node's tunnel, as its agent last saw it. */
  readonly tunnel?: TunnelHealth;
}>({
  node: str,
  version: str,
  store: open({ kind: str, revision: int }),
  dataplane: open({
    kind: str,
    lastApply: str,
    lastError: str,
    realisedRevision: int,
    skippedRecords: Type.Array(open({ key: str, reason: str })),
  }),
  fips: open(
    { DOWN: int, ACTIVE: int, UNREACHABLE: int, ERROR: int },
    { description: 'floating IPs by state' },
  ),
  nodes: open({ total: int, alive: int }),
  tunnel: tunnelHealth,
});

export const planResponse = view<PlanResponse>({
  node: str,
  dataplane: str,
  revision: int,
  add: Type.Array(open()),
  replace: Type.Array(open({ from: open(), to: open() })),
  remove: Type.Array(open()),
  refused: Type.Array(open({ address: str, reason: str })),
  skipped: Type.Array(open({ key: str, reason: str })),
});

export const poolResponse = view<PoolView>({
  name: str,
  gateway: str,
  delivery: str,
  uplink: str,
  entries: Type.Array(open({ kind: str }), {
    description: '`cidr`, `range` or `address` entries',
  }),
  targetRanges: strings,
  description: str,
  tags: strings,
  createdAt: str,
  revision: int,
  size: Type.String({ description: 'usable addresses, as a decimal string' }),
  allocated: int,
});
export const poolsResponse = list(poolResponse);

export const deletePoolResponse = view<{ readonly name: string; readonly deleted: boolean }>({
  name: str,
  deleted: bool,
});

export const forwardResponse = view<PortForward>({
  id: str,
  protocol: str,
  port: int,
  portEnd: int,
  targetPort: int,
  target: str,
  node: str,
  description: str,
});
export const forwardsResponse = list(forwardResponse);

const fipProperties = {
  address: str,
  family: int,
  pool: str,
  shared: bool,
  description: str,
  tags: strings,
  association: open({ mode: str, target: str, node: str, masquerade: bool, associatedAt: str }),
  forwards: Type.Array(forwardResponse),
  allocatedAt: str,
  revision: int,
  status: open({
    state: str,
    node: str,
    revision: int,
    stale: bool,
    message: str,
    updatedAt: str,
  }),
};
export const fipResponse = view<FipView>(fipProperties);
export const fipsResponse = list(fipResponse);

export const allocateResponse = view<FipView & { readonly created: boolean }>({
  ...fipProperties,
  created: Type.Boolean({ description: 'false when a client token returned an earlier one' }),
});

export const releaseResponse = view<{ readonly address: string; readonly released: boolean }>({
  address: str,
  released: bool,
});

export const appliedResponse = view<AppliedReport>({
  revision: int,
  outcome: Type.String({ description: 'applied, pending, error or unreachable' }),
  agents: Type.Array(
    open({
      node: str,
      state: Type.String({ description: 'applied, pending, error or unreachable' }),
      revision: int,
      message: str,
      held: Type.String({
        description:
          'applied, and the FIP held DOWN for this reason until it can be routed (a new tunnel path being measured)',
      }),
    }),
  ),
});

export const eventsResponse = list(
  view<AuditEvent>({
    seq: int,
    at: str,
    who: str,
    method: str,
    path: str,
    query: open(),
    body: Type.Unknown({ description: 'the request body, every secret-named field [redacted]' }),
    api: Type.String({
      description: 'ipfloater-rest or ipfloater-xmlrpc; absent: this API',
    }),
    answer: Type.String({ description: "IP Floater's answer, at most 200 characters" }),
    status: int,
    code: str,
    revision: int,
  }),
);

export const removeForwardResponse = view<{
  readonly address: string;
  readonly id: string;
  readonly removed: boolean;
}>({ address: str, id: str, removed: bool });

export const nodeResponse = view<NodeView>({
  name: str,
  site: str,
  endpoint: str,
  publicKey: str,
  overlayIp: str,
  tunnelDriver: str,
  unmanaged: Type.Boolean({ description: 'registered by the operator; runs no agent' }),
  seenBy: Type.Array(open({ node: str, tunnel: str, checkedAt: str, peer: open() }), {
    description: "an unmanaged node's tunnel as the agents peering with it report it",
  }),
  addresses: strings,
  alive: bool,
  aliveSince: str,
  tunnel: tunnelHealth,
  mesh: open({}, { description: "the node's mesh as its agent last applied it" }),
});
export const nodesResponse = list(nodeResponse);

export const removeNodeResponse = view<{
  readonly name: string;
  readonly removed: true;
  /** The overlay address the node held, free again. */
  readonly overlayIp?: string;
}>({ name: str, removed: bool, overlayIp: str });

export const joinTokenResponse = view<{
  /** The one string to copy to the remote host (`ipfjoin1.…`); the hub keeps only its hash. */
  readonly token: string;
  readonly expiresAt: string;
  readonly urls: readonly string[];
  readonly node?: string;
  /** SHA-256 of the hub's TLS certificate (hex), pinned by the token. */
  readonly fingerprint?: string;
  /** Present when a URL is not https: what would travel in clear text, and what to do. */
  readonly warning?: {
    readonly message: string;
    readonly hint: string;
    /** The token's URLs that are not https. */
    readonly urls: readonly string[];
  };
}>({
  token: str,
  expiresAt: str,
  urls: strings,
  node: str,
  fingerprint: str,
  warning: open(
    {
      message: str,
      hint: str,
      urls: Type.Array(Type.String(), { description: 'the URLs that are not https' }),
    },
    {
      description:
        "present when one of the token's URLs is not https: the token, the node credential and the node's store traffic would cross the network in clear text",
    },
  ),
});

export const ippoolResponse = list(
  view<IppoolEntryView>({
    pool: str,
    gateway: str,
    entries: strings,
    size: str,
    allocated: Type.Array(open({ address: str, target: str, mode: str })),
  }),
);

export const arpResponse = view<ArpResponse>({
  mac: str,
  address: str,
  source: Type.String({ description: '`pool` (pinned) or `neighbour` (seen)' }),
  pool: str,
  interface: str,
});

const meshPolicyRecord = view<MeshPolicyRecord>({
  policy: open(),
  trial: open({ previous: Type.Unknown(), deadline: str }),
  updatedAt: str,
});

export const meshResponse = view<MeshView>({
  record: meshPolicyRecord,
  inForce: open(),
  rolledBack: bool,
  rollback: open(),
  confirmation: open(),
  revision: int,
});

export const meshPolicyResponse = meshPolicyRecord;

export const meshConfirmResponse = view<MeshConfirmResult>({
  confirmedTrial: bool,
  trialDeadline: str,
  confirmation: open(),
  released: Type.Array(open({ node: str, hold: open() })),
});

export const meshAuditResponse = view<MeshAudit>({
  revision: int,
  overlay: open({ prefix: str, used: int, size: int }),
  unregistered: Type.Array(open()),
  unlisted: strings,
  lagging: Type.Array(open({ node: str, appliedRevision: int, alive: bool })),
  rejectAll: open({ on: strings, off: strings }),
  holds: Type.Array(open({ node: str, hold: open() })),
  rolledBack: strings,
});
