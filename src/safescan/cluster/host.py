"""What a cluster needs of the machine it runs on, checked before anything is created
(:func:`preflight`: the Debian packages, the service user, a state directory that user can
enter), and the service user's ownership of what the supervisor writes (:func:`chown_tree`)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
from pathlib import Path

from safescan.cluster import render
from safescan.cluster import tls as cluster_tls
from safescan.cluster.errors import ClusterError

SERVICE_USER = "postgres"  # PostgreSQL refuses to run as root


def service_user() -> str | None:
    """The user etcd, Patroni, PostgreSQL and HAProxy run as: ``postgres`` when started as
    root (PostgreSQL refuses root), else the caller."""
    return SERVICE_USER if os.geteuid() == 0 else None


def preflight(state_dir: Path) -> Path:
    """Check, before anything is created, that a cluster can run here: the Debian packages,
    the service user, and that it can enter ``state_dir`` (or the nearest existing parent).
    Returns PostgreSQL's binary directory."""
    bin_dir = render.find_pg_bin()
    if bin_dir is None:
        raise ClusterError("PostgreSQL server binaries not found (Debian: postgresql)")
    for tool, package in (("etcd", "etcd-server"), ("patroni", "patroni"), ("haproxy", "haproxy")):
        if shutil.which(tool) is None:
            raise ClusterError(f"`{tool}` not found: install the Debian package {package}")
    cluster_tls.check_patroni_https(shutil.which("patroni"))
    user = service_user()
    if user is None:
        return bin_dir
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ClusterError(f"no `{user}` user (it comes with PostgreSQL)") from None
    for d in [state_dir.resolve(), *state_dir.resolve().parents]:
        if not d.exists():
            continue
        st = d.stat()
        if (
            st.st_uid == pw.pw_uid
            or st.st_mode & 0o001
            or (st.st_gid == pw.pw_gid and st.st_mode & 0o010)
        ):
            continue
        raise ClusterError(
            f"the `{user}` user cannot enter {d} (mode {st.st_mode & 0o777:o}); put the state"
            " directory where it can (e.g. chmod o+x, or another --state)"
        )
    return bin_dir


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give ``root`` and everything below it to ``uid``:``gid`` (links themselves, not their
    targets; a file gone meanwhile is skipped)."""
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


__all__ = ["SERVICE_USER", "chown_tree", "preflight", "service_user"]
