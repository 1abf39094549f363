// Must NOT type-check (test/package.test.js): proves the declarations are actually used.
import { HoundClient } from 'houndpool';
import { createHoundPool } from 'houndpool/tracehound';

async function wrong(c: HoundClient): Promise<void> {
  await c.cancel(5); // job ids are bigint
  createHoundPool({ socket: '/s', poolSize: 1, timeout: 1, rotationJitterMs: 0, onPoolExhausted: 'queue' });
}
void wrong;
