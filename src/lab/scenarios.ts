/**
 * Ready-made lab topologies, one module each under scenarios/. Addresses are documentation
 * ranges for the "public" side (198.51.100.0/24, 192.0.2.0/24, 203.0.113.0/24, 2001:db8::/32),
 * private ranges on the LAN, and in cloudHome the CGNAT range (100.64.0.0/10) between routers and
 * the benchmarking range (198.18.0.0/15, never routed on the internet) as a home ISP's "public"
 * customer range. oldNew uses the benchmarking range as datacenter B's public addresses.
 *
 * gatewayLan, cloudHome and oldNew stand in the same internet (scenarios/internet.ts): a client,
 * the router `up` and the host the floating pool is routed to; each scenario adds only what is
 * its own. fleet is a topology of its own.
 *
 * Tests, the demo, the benchmarks and `ipferry lab` import the scenarios from here, so this one
 * name keeps covering them all.
 */
export {
  CLOUD_HOME,
  type CloudHomeCounters,
  type CloudHomeOptions,
  type CloudHomeRulesets,
  applyCloudHome,
  cloudHome,
  cloudHomeCounters,
  cloudHomeRulesets,
  cloudHomeSpec,
  setCloudHomeBlackhole,
} from './scenarios/cloud-home.js';
export {
  FLEET,
  type FleetCounters,
  type FleetNode,
  type FleetOptions,
  type FleetSite,
  applyFleet,
  fleet,
  fleetCounters,
  fleetNodes,
  fleetRuleset,
  fleetSpec,
} from './scenarios/fleet.js';
export { GATEWAY_LAN, type GatewayLanOptions, gatewayLan } from './scenarios/gateway-lan.js';
export {
  OLD_NEW,
  type OldNewCounters,
  type OldNewOptions,
  type OldNewRulesets,
  type OldNewSeen,
  applyOldNew,
  oldNew,
  oldNewCounters,
  oldNewForgetSeen,
  oldNewRulesets,
  oldNewSeen,
  oldNewSpec,
} from './scenarios/old-new.js';
