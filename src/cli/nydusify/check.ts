import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { NydusError } from '../../errors/errors.js';
import { hostPlatform, parsePlatform } from '../../oci/manifest.js';
import { checkImage, reportPassed } from '../../converter/check.js';
import { backendFromFlags, nydusifyLogger } from './common.js';

/** `nydusify check`: verify a Nydus image, and against its source OCI image when given. */
export function checkCommand(): Command {
  return new Command('check')
    .description('Check a Nydus image')
    .requiredOption('--target <ref>', 'Target (Nydus) image reference')
    .option('--source <ref>', 'Source (OCI) image reference to compare with')
    .option('--source-insecure', 'Skip verifying server certs for HTTPS source registry', false)
    .option('--target-insecure', 'Skip verifying server certs for HTTPS target registry', false)
    .option('--source-backend-type <type>', 'Type of storage backend of the source (accepted, unused)')
    .option('--source-backend-config <json>', 'Config of the source storage backend (accepted, unused)')
    .option(
      '--source-backend-config-file <file>',
      'Config file of the source storage backend (accepted, unused)',
    )
    .option('--target-backend-type <type>', 'Type of storage backend nydusd reads the target blobs from')
    .option('--target-backend-config <json>', 'Config of the target storage backend in JSON')
    .option('--target-backend-config-file <file>', 'Config file of the target storage backend in JSON')
    .option('--multi-platform', 'Accepted for compatibility; unused (as upstream)', false)
    .addOption(
      new Option('--platform <platform>', 'The platform of the image to check (os/arch[/variant])').default(
        undefined,
        'linux/<host arch>',
      ),
    )
    .option('--work-dir <dir>', 'Work directory (wiped first)', './output')
    .option('--nydus-image <path>', 'Accepted for compatibility: bootstraps are checked in-process')
    .option('--nydusd <path>', 'The nydusd binary path (default: the one of this package)')
    .action(async (opts: Record<string, string | boolean | undefined>, cmd: Command) => {
      const log = nydusifyLogger(cmd);
      const str = (k: string): string | undefined => opts[k] as string | undefined;
      const targetBackend = await backendFromFlags(
        str('targetBackendType'),
        str('targetBackendConfig'),
        str('targetBackendConfigFile'),
      );
      const platform = str('platform') === undefined ? hostPlatform() : parsePlatform(str('platform')!);
      const report = await checkImage({
        target: String(opts['target']),
        source: str('source'),
        targetInsecure: opts['targetInsecure'] === true,
        sourceInsecure: opts['sourceInsecure'] === true,
        platform,
        workDir: resolve(String(opts['workDir'])),
        targetBackend,
        nydusd: str('nydusd'),
        log,
      });
      const rules: [string, string[] | undefined][] = [
        ['manifest', report.manifest],
        ['bootstrap', report.bootstrap],
        ['filesystem', report.filesystem],
      ];
      for (const [name, problems] of rules) {
        if (problems === undefined) {
          log.info(`Rule ${name}: skipped (no --source to compare with)`);
          continue;
        }
        if (problems.length === 0) log.info(`Rule ${name}: passed`);
        for (const p of problems) process.stderr.write(`[${name}] ${p}\n`);
      }
      if (!reportPassed(report)) {
        const n = report.manifest.length + report.bootstrap.length + (report.filesystem?.length ?? 0);
        throw new NydusError('ERR_FORMAT', `check failed: ${n} problem(s) in ${String(opts['target'])}`);
      }
      log.info(`Verified Nydus image ${String(opts['target'])}`);
    });
}
