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
    required: ['target'],
    properties: {
      target: address,
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
    required: ['target'],
    properties: { target: address, node: name },
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
