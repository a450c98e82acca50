"""`longhaul`: argument plumbing only; the commands live in backend/client/commands.py."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from backend.client import commands
from backend.client.checks import check_job_id
from backend.client.errors import ClientError, ExitCode, InvalidArgument
from backend.client.library import Client

DEFAULT_API = "http://127.0.0.1:8000"

EPILOG = """\
exit codes:
  0  done (download saved and verified; status or files printed; job cancelled)
  1  the job ended failed, cancelled or expired; `cancel` of a job that already ended;
     `retry` of a job that is queued, running or ready
  2  usage error (an output path that is a directory, device, FIFO or socket), or the API
     refused the request (unknown job, bad file ids, bad token)
  3  the API or the storage server could not be reached, or kept failing (5xx)
  4  the archive failed verification (not a ZIP, a bad CRC, or a wrong number of entries)
  5  the output file could not be written
130 interrupted (Ctrl-C); the job goes on and `download --job ID` picks it up

environment: LONGHAUL_API_URL (default http://127.0.0.1:8000), LONGHAUL_TOKEN (bearer token)
"""


def _job_id(value: str) -> str:
    value = value.strip().lower()
    try:
        return check_job_id(value)
    except InvalidArgument:
        raise argparse.ArgumentTypeError(f"{value!r} is not a job id (32 hex characters)") from None


def _file_id(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a file id (a positive integer)")
    return int(value)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


def _common(subcommand: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the command; a subcommand's copy only overrides
    what it was given (SUPPRESS), so `longhaul --json status ID` and `status ID --json` agree."""
    parser = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if subcommand else None
    parser.add_argument(
        "--api",
        default=default or os.environ.get("LONGHAUL_API_URL", DEFAULT_API),
        help="the server's base URL ($LONGHAUL_API_URL, default " + DEFAULT_API + ")",
    )
    parser.add_argument(
        "--token",
        default=default or os.environ.get("LONGHAUL_TOKEN"),
        help="bearer token ($LONGHAUL_TOKEN)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default or False,
        help="print results as JSON on stdout",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default or False, help="no progress"
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = [_common(subcommand=True)]
    parser = argparse.ArgumentParser(
        parents=[_common(subcommand=False)],
        prog="longhaul",
        description="Bulk downloads from a Longhaul server: start a job, follow it, fetch the ZIP.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dl = sub.add_parser(
        "download", parents=common, help="build one ZIP of the given files and save it"
    )
    dl.add_argument("file_ids", nargs="*", type=_file_id, metavar="FILE_ID")
    dl.add_argument("--job", type=_job_id, help="follow and fetch an existing job instead")
    dl.add_argument("-o", "--output", type=Path, help="where to save (default longhaul-ID.zip)")
    dl.add_argument("--poll", action="store_true", help="poll the status instead of SSE")
    dl.add_argument(
        "--poll-interval", type=float, default=2.0, help="seconds between polls (default 2)"
    )
    dl.add_argument("--no-verify", action="store_true", help="skip checking the archive")
    dl.add_argument("--idempotency-key", help="repeat a download without starting a new job")

    st = sub.add_parser("status", parents=common, help="print a job's status")
    st.add_argument("job_id", type=_job_id)
    ca = sub.add_parser("cancel", parents=common, help="cancel a queued or running job")
    ca.add_argument("job_id", type=_job_id)
    sub.add_parser("files", parents=common, help="list the catalogue")
    rt = sub.add_parser(
        "retry", parents=common, help="start a failed, cancelled or expired job again"
    )
    rt.add_argument("job_id", type=_job_id)
    js = sub.add_parser("jobs", parents=common, help="list your jobs, newest first (needs a token)")
    js.add_argument(
        "--status",
        action="append",
        default=[],
        help="only jobs in this state (queued, processing, ready, failed, cancelled, expired); "
        "repeat for several",
    )
    js.add_argument("--limit", type=_positive, help="at most this many jobs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    output = commands.Output(as_json=args.json, quiet=args.quiet)
    if args.command == "download" and bool(args.file_ids) == bool(args.job):
        parser.error("download needs FILE_IDs or --job ID (one of the two)")
    try:
        with Client(args.api, token=args.token) as client:
            if args.command == "files":
                return commands.files(client, output)
            if args.command == "status":
                return commands.status(client, output, args.job_id)
            if args.command == "cancel":
                return commands.cancel(client, output, args.job_id)
            if args.command == "retry":
                return commands.retry(client, output, args.job_id)
            if args.command == "jobs":
                return commands.jobs(client, output, args.status, args.limit)
            request = commands.DownloadArgs(
                file_ids=args.file_ids,
                job_id=args.job,
                dest=args.output,
                use_sse=not args.poll,
                verify=not args.no_verify,
                idempotency_key=args.idempotency_key,
                poll_interval=args.poll_interval,
            )
            return commands.download(client, output, request)
    except ClientError as exc:
        return commands.report(output, exc)
    except OSError as exc:
        return output.failure(f"cannot write the output: {exc}", ExitCode.LOCAL_IO)
    except KeyboardInterrupt:
        return output.failure("interrupted", ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
