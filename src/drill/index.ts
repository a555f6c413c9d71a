/** `bulwark drill`: a game day on one machine (cluster, backups, failover, deploys, PITR) with measured results. */
import './errors.js';

export { archivingProblem, requireArchivingIntoRepo, SCRATCH_ROWS, scratchTableName } from './configured-pitr.js';
export { drillPlan, type Release } from './environment.js';
export { DrillError, DrillErrorCodes } from './errors.js';
export { formatProbe, lostOrders, parseSteps, verdict, writeGapMs } from './hypothesis.js';
export { type DrillJournal, type DrillOptions, drillExitCode, runDrill } from './run.js';
export {
  assertTargetsAllowed,
  CONFIGURED_STEP_REFUSALS,
  CONFIGURED_STEPS,
  configuredSteps,
  type DrillTarget,
  isLocalHost,
  requireBackupParts,
  requireDeployedApp,
  requirePitrFolder,
  requireRunningMonitor,
  targetFromConfig,
  targetHosts,
} from './target.js';
export * from './types.js';
