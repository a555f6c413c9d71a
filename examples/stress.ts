/**
 * The origin document's StressTestUser: almost no think time against the heavy query, with the arrival
 * rate climbing until the service breaks. Open model: the rate is kept whether or not the server keeps
 * up, so saturation shows as latency and dropped iterations, not as a silently lower load.
 * `bulwark load examples/stress.ts --host http://127.0.0.1:8080`
 */
import { scenario, user } from 'bulwark';

export default scenario({
  host: 'http://127.0.0.1:8080',
  users: [user('StressUser', { tasks: [async (vu) => void (await vu.http.get('/api/heavy-query'))] })],
  load: {
    executor: 'ramping-arrival-rate',
    startRate: 50,
    timeUnit: '1s',
    preAllocatedVUs: 50,
    maxVUs: 2000,
    stages: [
      { duration: '20s', target: 500 },
      { duration: '20s', target: 1500 },
      { duration: '10s', target: 0 },
    ],
  },
  thresholds: {
    http_req_duration: [{ threshold: 'p(99)<3000', abortOnFail: true, delayAbortEval: '10s' }],
    http_req_failed: ['rate<0.05'],
  },
});
