import { FakeDataplane } from '../../src/dataplane/fake.js';
import { dataplaneConformance } from '../support/dataplane-conformance.js';

dataplaneConformance('fake', () => {
  const dataplane = new FakeDataplane();
  dataplane.hostFacts = { interfaces: ['eth0', 'lan0'], addresses: ['192.0.2.2', '10.0.0.1'] };
  const sendPings = (address: string, count: number): Promise<void> => {
    for (let i = 0; i < count; i++) dataplane.countPacket(address, 84);
    return Promise.resolve();
  };
  return Promise.resolve({ dataplane, sendPings, cleanup: () => Promise.resolve() });
});
