"""Submit a job file to a running Ray cluster through the Ray Jobs API.

Validates the job file here first, uploads the working directory and says how many files
and bytes went (without what its .gitignore or .rayignore files list, nor runs/,
checkpoints/, data/, .git at its top, nor anywhere files that look like secrets: .env,
*.pem, *.key, id_rsa*, *token, .ssh/, .aws/, ...; those left out are named), runs
`distnet train JOB [--set ...]` on the cluster, prints the job id and follows its logs
until the job ends (exit 0 if it succeeded, 1 if not, with one line saying why its driver
died: distnet's error, the exception, or the native crash and the import it hit).
Status, logs and stop afterwards: `ray job status|logs|stop JOB_ID`.

The address is the dashboard's, as for `ray job submit`: http://HEAD:8265, or HEAD:8265
meaning that; without --address, $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS. --pip PKG
(repeatable) installs a pip requirement for the job (its runtime_env "pip"). A bad address,
requirement or job file is one line before anything is uploaded.

The cluster's token (Ray 2.60 token authentication) is taken from --token, else
$RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token; on the head
node `ray get-auth-token` prints it.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "submit",
        help="submit a job to a Ray cluster (Ray Jobs API)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job", metavar="JOB.toml", help="job file, inside the working directory")
    p.add_argument(
        "--address",
        help="the cluster's dashboard, http://HEAD:8265 or HEAD:8265 "
        "(default: $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS)",
    )
    p.add_argument(
        "--pip",
        action="append",
        default=[],
        metavar="PKG",
        help="a pip requirement to install for the job (runtime_env pip; repeatable)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a job setting (repeatable)",
    )
    p.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="print the job id and return at once instead of following the logs",
    )
    p.add_argument("--token", help="the cluster's authentication token")
    p.add_argument(
        "--working-dir",
        default=".",
        metavar="DIR",
        help="directory uploaded as the job's working directory (default: .)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from distnet.distributed.submit import dashboard_address, submit_job

    address = dashboard_address(args.address)
    result = submit_job(
        args.job,
        address,
        args.overrides,
        wait=args.wait,
        working_dir=args.working_dir,
        extra_pip=args.pip,
        token=args.token,
    )
    if result.status is None or result.succeeded:
        return 0
    reason = f": {result.reason}" if result.reason else ""
    print(
        f"distnet: job {result.job_id} {result.status.lower()}{reason} "
        f"(ray job logs {result.job_id} --address {address})",
        file=sys.stderr,
    )
    return 1
