/** GET /v1/applied: the request's query as the service's, and the wait it asks for. */
import type { AppliedQuery } from '../service/applied.js';
import type { ControlPlane } from '../service/control.js';
import type { AppliedRequest } from './contract.js';
import type { Handlers } from './routes.js';

export function appliedHandler(control: ControlPlane): Handlers['applied'] {
  return ({ query }) => control.applied(appliedQuery(query), waitMs(query.wait));
}

function appliedQuery(q: AppliedRequest): AppliedQuery {
  return {
    revision: Number(q.revision),
    ...(q.fip !== undefined ? { fip: q.fip } : {}),
    ...(q.pool !== undefined ? { pool: q.pool } : {}),
    ...(q.nodes !== undefined ? { nodes: q.nodes.split(',') } : {}),
    ...(q.all === 'true' ? { all: true } : {}),
  };
}

/** `10s`, `500ms` (the schema's pattern) in milliseconds; none: answer at once. */
function waitMs(text: string | undefined): number {
  const m = text === undefined ? null : /^(\d+)(ms|s)$/.exec(text);
  if (!m) return 0;
  return Number(m[1]) * (m[2] === 's' ? 1000 : 1);
}
