/** Fixed-rate (open model) GETs for the added-latency comparison: RATE requests/s for DURATION. */
import { env, none, scenario, user } from 'bulwark';

export default scenario({
  users: [user('get', { wait: none(), tasks: [async (vu) => void (await vu.http.get('/'))] })],
  load: {
    executor: 'constant-arrival-rate',
    rate: Number(env.RATE ?? 2000),
    timeUnit: '1s',
    duration: env.DURATION ?? '10s',
    preAllocatedVUs: 64,
    maxVUs: 512,
  },
});
