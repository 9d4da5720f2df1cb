/**
 * JSON schemas of the API's requests, for the OpenAPI document and a first check of shape
 * (unknown fields are refused: a typo like `allowReasociation` must not be silently ignored).
 * Meaning — addresses, ranges, overlaps — is checked by core/validate.ts, which reports every
 * problem at once with the same codes as the CLI.
 */
const address = { type: 'string', description: 'IPv4 or IPv6 address', examples: ['203.0.113.10'] };
const name = { type: 'string', description: 'lower-case name', examples: ['gw1'] };
const text = { type: 'string', maxLength: 256 };
const tags = { type: 'array', items: { type: 'string' } };

const addressParam = {
  type: 'object',
  properties: { address },
  required: ['address'],
} as const;

export function tagged(tag: string): object {
  return { tags: [tag] };
}

export function named(tag: string): object {
  return { tags: [tag], params: { type: 'object', properties: { name }, required: ['name'] } };
}

export const createPool = {
  tags: ['pools'],
  summary: 'Create a pool of floating IPs homed on a gateway node',
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['name', 'gateway'],
    properties: {
      name,
      gateway: { ...name, description: 'node whose agent serves the pool' },
      delivery: {
        type: 'string',
        enum: ['routed', 'onlink'],
        description: 'routed by upstream to the gateway (default), or on-link on `uplink`',
      },
      uplink: { type: 'string', description: 'uplink interface of an on-link pool' },
      entries: {
        type: 'array',
        items: { type: 'string' },
        description: 'CIDR, FIRST-LAST, IP or IP=MAC',
      },
      shared: {
        type: 'array',
        items: address,
        description: "the gateway's own addresses: port forwards only",
      },
      description: text,
      tags,
    },
  },
};

export const updatePool = {
  tags: ['pools'],
  summary:
    'Add entries (shared addresses too), remove single addresses, set the description or tags',
  params: { type: 'object', properties: { name }, required: ['name'] },
  body: {
    type: 'object',
    additionalProperties: false,
    properties: {
      addEntries: {
        type: 'array',
        items: { type: 'string' },
        description: 'entries to add: CIDR, FIRST-LAST, IP or IP=MAC',
      },
      addShared: {
        type: 'array',
        items: address,
        description: "the gateway's own addresses to add: port forwards only",
      },
      removeAddresses: {
        type: 'array',
        items: address,
        description: 'single-address entries to remove; refused while a FIP holds one',
      },
      description: { ...text, description: 'the new description; "" removes it' },
      tags: { ...tags, description: 'the new tags, replacing the old ones' },
    },
  },
};

export const listFips = {
  tags: ['floating ips'],
  querystring: { type: 'object', additionalProperties: false, properties: { pool: name } },
};

export const allocate = {
  tags: ['floating ips'],
  summary: 'Allocate a floating IP (any free one, or a requested address)',
  body: {
    type: 'object',
    additionalProperties: false,
    properties: {
      pool: name,
      address,
      family: { type: 'integer', enum: [4, 6], description: 'only addresses of this IP version' },
      clientToken: {
        type: 'string',
        description: 'idempotency token: a retry returns the same FIP',
      },
      description: text,
      tags,
    },
  },
};

export const fip = { tags: ['floating ips'], params: addressParam };

export const release = {
  tags: ['floating ips'],
  summary: 'Release a floating IP (refused while associated unless force=true)',
  params: addressParam,
  querystring: {
    type: 'object',
    additionalProperties: false,
    properties: { force: { type: 'string', enum: ['true', 'false'] } },
  },
};

export const associate = {
  tags: ['floating ips'],
  summary: 'Associate a floating IP with a target',
  params: addressParam,
  body: {
    type: 'object',
    additionalProperties: false,
    properties: {
      target: {
        ...address,
        description: 'where the FIP goes; required but in routed mode, where it is the FIP itself',
      },
      node: name,
      mode: { type: 'string', enum: ['nat', 'routed', 'ports'] },
      masquerade: { type: 'boolean' },
      allowReassociation: { type: 'boolean' },
    },
  },
};

export const move = {
  tags: ['floating ips'],
  summary: 'Re-associate a floating IP to a new target in one step',
  params: addressParam,
  body: {
    type: 'object',
    additionalProperties: false,
    properties: {
      target: {
        ...address,
        description: 'the new target; a routed FIP omits it (its target is the FIP itself)',
      },
      node: name,
    },
  },
};

export const forwardsOf = { tags: ['port forwards'], params: addressParam };

export const addForward = {
  tags: ['port forwards'],
  summary: 'Forward a protocol and port (or range) of a floating IP',
  params: addressParam,
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['protocol', 'port', 'target'],
    properties: {
      protocol: { type: 'string', enum: ['tcp', 'udp'] },
      port: { oneOf: [{ type: 'string' }, { type: 'integer' }], description: 'P or P-Q' },
      targetPort: { type: 'integer' },
      target: address,
      node: name,
      description: text,
    },
  },
};

export const forward = {
  tags: ['port forwards'],
  params: {
    type: 'object',
    properties: { address, id: { type: 'string' } },
    required: ['address', 'id'],
  },
};

export const arp = {
  tags: ['ip floater'],
  summary: 'MAC → address, from pool pins and the gateway neighbour table',
  params: { type: 'object', properties: { mac: { type: 'string' } }, required: ['mac'] },
};

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

export const meshPolicy = {
  type: 'object',
  description:
    'The fleet mesh policy: fleet, then site, then node layers (docs/mesh.md); its problems are reported all at once (IPF_E_VALIDATION, IPF_E_MESH_OVERLAP)',
  properties: {
    overlay: {
      description: 'required: the IPv4 prefix the overlay addresses come from',
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
};

export const getMesh = {
  tags: ['mesh'],
  summary:
    'The mesh policy, its trial and deadline, whether it rolled back, the latest confirmation',
};

export const setMeshPolicy = {
  tags: ['mesh'],
  summary: 'Set the mesh policy, optionally as a trial that rolls back unless confirmed in time',
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['policy'],
    properties: {
      policy: meshPolicy,
      confirmWithinSeconds: {
        type: 'integer',
        description:
          'seconds until every node goes back to the previous policy unless confirmed (1 to a week; checked with the policy)',
      },
    },
  },
};

export const confirmMesh = {
  tags: ['mesh'],
  summary:
    'Confirm the running trial (refused after its deadline) and release membership changes held back by maxChange',
  body: {
    type: 'object',
    additionalProperties: false,
    properties: {
      holdsOnly: {
        type: 'boolean',
        description:
          'release held membership changes only: confirm no trial, and refuse none that ran out',
      },
    },
  },
};

export const auditMesh = {
  tags: ['mesh'],
  summary:
    'Audit the mesh (changes nothing): unregistered and unlisted hosts, lagging nodes, reject_all, holds, overlay usage',
  body: {
    type: 'object',
    additionalProperties: false,
    properties: {
      inventory: {
        type: 'string',
        description: 'one host per line: NAME ADDRESS[,ADDRESS…] [site=SITE]; "#" comments',
        examples: ['web1 10.0.0.11,203.0.113.11 site=fra\n'],
      },
      source: { type: 'string', maxLength: 256, description: 'its name in errors (a file name)' },
    },
  },
};

export const removeNode = {
  tags: ['nodes'],
  summary:
    'Remove a node for good: its record, liveness and overlay address (refused while a pool or a floating IP uses it)',
  params: { type: 'object', properties: { name }, required: ['name'] },
};
