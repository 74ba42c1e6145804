"""The PACS options shared by ``stran detect``, ``stran import`` and ``stran serve``, and what they build."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stran.pacs.client import PacsClient


def add_pacs_arguments(parser: argparse.ArgumentParser, *, studies: bool = True) -> None:
    """``--dicomweb URL`` with its credentials (and ``--study UID`` / ``--all-cine`` when ``studies``)."""
    group = parser.add_argument_group(
        "PACS (DICOMweb)", "Credentials: prefer the environment (STRAN_PACS_USER + STRAN_PACS_PASSWORD, or "
        "STRAN_PACS_TOKEN) to options, which other users of this machine can see in the process list.")
    group.add_argument("--dicomweb", metavar="URL", help="the PACS's DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    if studies:
        group.add_argument("--study", action="append", default=[], metavar="UID",
                           help="a Study Instance UID on the PACS (repeat for several)")
        group.add_argument("--all-cine", action="store_true", help="every study on the PACS that holds a cine")
    group.add_argument("--pacs-user", help="HTTP basic user (default: $STRAN_PACS_USER)")
    group.add_argument("--pacs-password", help="HTTP basic password (default: $STRAN_PACS_PASSWORD)")
    group.add_argument("--pacs-token", help="bearer token (default: $STRAN_PACS_TOKEN)")


def pacs_client(args: argparse.Namespace) -> PacsClient | None:
    """The client for ``--dicomweb`` (None without it); refuses ``--study`` without ``--dicomweb``."""
    from stran.errors import UserError

    if not args.dicomweb:
        if getattr(args, "study", None) or getattr(args, "all_cine", False):
            raise UserError("--study and --all-cine need --dicomweb URL", "give the PACS's DICOMweb root")
        return None
    from stran.pacs.client import Credentials, PacsClient

    return PacsClient(args.dicomweb, Credentials.from_options(args.pacs_user, args.pacs_password, args.pacs_token))


def pacs_studies(args: argparse.Namespace, client: PacsClient) -> list[str]:
    """The Study Instance UIDs asked for (``--study``, or the PACS's cine studies with ``--all-cine``)."""
    from stran.errors import UserError

    uids = list(dict.fromkeys(args.study))
    if args.all_cine:
        found = [s.uid for s in client.cine_studies()]
        print(f"{len(found)} cine studies on {client.url}")
        uids += [u for u in found if u not in uids]
    if not uids:
        raise UserError("--dicomweb needs --study UID (or --all-cine)",
                        "list the PACS's cine studies with `stran inspect --dicomweb URL`")
    return uids
