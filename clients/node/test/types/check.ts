// Type-checked by test/package.test.js with `tsc --strict --noEmit` against the packed package.
import { HoundClient, HoundError, type Outcome, type SubmitReply } from 'houndpool';
import {
  createHoundPool,
  HOUND_PRESSURE_ERRORS,
  isHoundPressureError,
  type HoundResult,
  type IHoundPool,
} from 'houndpool/tracehound';

async function client(path: string): Promise<number> {
  const c: HoundClient = await HoundClient.connect(path);
  c.on('outcome', (o: Outcome) => {
    const id: bigint = o.jobId;
    void id;
  });
  const ac = new AbortController();
  const r: SubmitReply = await c.submit(
    { kind: 'evacuate', severity: 'high', body: new Uint8Array([1, 2]), key: 'sqli:abc' },
    { signal: ac.signal, timeoutMs: 1000 },
  );
  if (r.accepted) {
    const o = await r.outcome;
    if (o.result === 'completed' && o.receipt.payload) {
      const b: Buffer = o.receipt.payload;
      void b;
    } else if (o.result === 'dropped') {
      const why: string = o.drop.reason;
      void why;
    }
    const answer: 'not_found' | 'dequeued' | 'killed' | `unknown_${number}` = await c.cancel(r.jobId);
    void answer;
  } else {
    const why: string = `${r.reason}: ${r.message}`;
    void why;
  }
  const s = await c.stats();
  try {
    await c.close();
  } catch (e) {
    if (e instanceof HoundError && e.code === 'connect_failed') return -1;
  }
  return s.accepted - s.completed;
}

class Evidence {
  constructor(private readonly _bytes: ArrayBuffer) {}
  get signature(): string { return 'sqli:abc'; }
  get severity(): 'low' | 'medium' | 'high' | 'critical' { return 'critical'; }
  get bytes(): ArrayBuffer { return this._bytes; }
}

function pool(path: string): IHoundPool {
  const p = createHoundPool({ socket: path, poolSize: 4, timeout: 5000, rotationJitterMs: 100, onPoolExhausted: 'defer', deferQueueLimit: 10 });
  p.onResult((r: HoundResult) => {
    if (r.status === 'error' && isHoundPressureError(r.error)) console.log(r.error === HOUND_PRESSURE_ERRORS.DEFER_QUEUE_FULL);
  });
  const nothing: void = p.activate(new Evidence(new ArrayBuffer(4)));
  void nothing;
  p.terminate('sqli:abc');
  const total: number = p.stats.totalActivations;
  void total;
  p.shutdown();
  void p.closed;
  return p;
}

void client;
void pool;
