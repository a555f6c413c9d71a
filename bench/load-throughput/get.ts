/** One GET per iteration, no think time: the scripted-VU path at full speed. */
import { none, scenario, user } from 'bulwark';

export default scenario({
  host: 'http://127.0.0.1:8080',
  users: [user('Getter', { wait: none(), tasks: [async (vu) => void (await vu.http.get('/api/products'))] })],
  load: { vus: 50, duration: '10s' },
});
