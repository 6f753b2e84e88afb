"""Who may open which workspace: per-session workspaces, share links, templates and idle clean-up.

One Refiner server serves many people (a class of 30, a labelling team). Each of them owns a
*session*: a random token the app keeps in the page's address (``?session=…``), or, when the
operator turns on sign-in, the identity provider's user id. A session sees and opens only its own
workspaces and those shared with it by a link; nothing is chosen from a server-wide "last
workspace". The rules live here, not in the pages, so a page cannot forget them. Layout::

    <root>/templates/<name>/        the shipped demos, built once, never handed out for editing
    <root>/owners/<id>/<name>/      one owner's workspaces (<id>: start of the owner key's SHA-256)
    <workspace>/access.json         {"owner": sha256(owner key), "template": name | null,
                                     "shares": {sha256(share token): "read" | "edit"}}
    <workspace>/.used               touched whenever anyone opens the workspace (the idle clock)

Tokens are never stored, only their SHA-256: someone who can read the workspace folders still
cannot take over a session or a share link. A share link's token is shown once, when made; making
a new link of the same kind revokes the old one.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from refiner.app.demos import DEMO_NAME
from refiner.app.workspace import SETTINGS, TILE, Workspace, check_name
from refiner.core.atomic import atomic_write_json as _write_json
from refiner.core.atomic import file_lock, read_json
from refiner.core.classes import ClassSpec
from refiner.data.tile import Tile

ACCESS, USED = "access.json", ".used"
TEMPLATES, OWNERS = "templates", "owners"
TTL_ENV, AUTH_ENV, PROVIDER_ENV = "REFINER_SESSION_TTL_HOURS", "REFINER_AUTH", "REFINER_AUTH_PROVIDER"
DEFAULT_TTL_HOURS = 72.0
MODES = ("read", "edit")
#: What ``secrets.token_urlsafe`` makes (24 bytes: 32 characters); shorter or odd text is no token.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,86}$")
SHARED_READ = "it was shared with you to look at: ask its owner for an editable link"
TEMPLATE_READ = "it is a shipped template: open your own copy of it from the start page"


def new_token() -> str:
    """An unguessable token (192 random bits) for a session or a share link."""
    return secrets.token_urlsafe(24)


def valid_token(token: object) -> bool:
    """Whether ``token`` looks like one :func:`new_token` makes; anything else is refused before use."""
    return isinstance(token, str) and bool(_TOKEN.match(token))


def digest(text: str) -> str:
    """SHA-256 hex of ``text``: what is stored of tokens and owner keys, never the text itself."""
    return hashlib.sha256(text.encode()).hexdigest()


#: The server's signing secret for session keys: ``$REFINER_SESSION_SECRET``, else a random one
#: kept in ``<root>/.session_secret`` (made on first use, readable by the server's user only).
SECRET_ENV, SECRET_FILE = "REFINER_SESSION_SECRET", ".session_secret"
_SIG_CHARS = 22  # 16 bytes of HMAC-SHA256, URL-safe base64 without padding
_SECRETS: dict[str, bytes] = {}


def server_secret(root: str | Path | None = None) -> bytes:
    """The key session tokens are signed with (``$REFINER_SESSION_SECRET``, else ``<root>/.session_secret``)."""
    env = os.environ.get(SECRET_ENV, "").strip()
    if env:
        return env.encode()
    if root is None:
        raise ValueError(f"no session secret: set {SECRET_ENV} or give the workspaces root")
    path = Path(root) / SECRET_FILE
    if str(path) in _SECRETS:
        return _SECRETS[str(path)]
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".session_secret.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # a secret another process made first wins
                os.link(tmp, path)  # whole or not at all
        finally:
            Path(tmp).unlink(missing_ok=True)
    secret = path.read_bytes()
    if len(secret) < 16:
        raise ValueError(f"the server's session secret is damaged: the operator must delete {SECRET_FILE} and restart")
    _SECRETS[str(path)] = secret
    return secret


def _signature(body: str, secret: bytes) -> str:
    mac = hmac.new(secret, b"refiner-session:" + body.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def sign_session(body: str, root: str | Path | None = None) -> str:
    """``body`` (random text) with the server's signature: a session key this server will accept."""
    return body + _signature(body, server_secret(root))


def issue_session(root: str | Path | None = None) -> str:
    """A new session key, made by the server: 192 random bits and their signature (54 characters).

    A client cannot invent one: a ``?session=`` the server did not sign is refused, so two people
    picking the same string do not share workspaces and a crafted link cannot put a victim into a
    session the attacker knows (session fixation).
    """
    return sign_session(new_token(), root)


def session_known(token: object, root: str | Path | None = None) -> bool:
    """Whether ``token`` is a session key this server issued (its signature checks out)."""
    if not valid_token(token) or len(str(token)) < 22 + _SIG_CHARS:
        return False
    body, sig = str(token)[:-_SIG_CHARS], str(token)[-_SIG_CHARS:]
    return hmac.compare_digest(sig, _signature(body, server_secret(root)))


def browser_key(token: str) -> str:
    """The owner key of an anonymous browser session (its URL token)."""
    if not valid_token(token):
        raise ValueError("this session key is not valid: open the app without one to get a new session")
    return f"browser:{token}"


def user_key(claims: Mapping[str, object]) -> str:
    """The owner key of a signed-in user: the identity provider's issuer and subject (else email).

    Keyed so that no browser token can ever name it (``browser:`` vs ``user:``).
    """
    sub, email = claims.get("sub"), claims.get("email")
    if sub:
        return f"user:{claims.get('iss', '')}|{sub}"
    if email:
        return f"user:email|{email}"
    raise ValueError("the identity provider gave no user id (sub) or email: ask the operator to check [auth]")


def auth_required() -> bool:
    """``$REFINER_AUTH`` set to 1: everyone signs in (Streamlit's ``st.login``); off by default."""
    return os.environ.get(AUTH_ENV, "").strip().lower() in {"1", "true", "yes"}


def auth_provider() -> str | None:
    """The ``[auth.<provider>]`` section to sign in with (``$REFINER_AUTH_PROVIDER``); None: plain ``[auth]``."""
    return os.environ.get(PROVIDER_ENV, "").strip() or None


def ttl_hours() -> float:
    """Hours a session workspace may lie unused before the clean-up removes it (``$REFINER_SESSION_TTL_HOURS``, 72)."""
    raw = os.environ.get(TTL_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TTL_HOURS
    except ValueError:
        value = DEFAULT_TTL_HOURS
    return value if value > 0 else DEFAULT_TTL_HOURS


# --------------------------------------------------------------------------- access records


def read_access(folder: Path) -> dict:
    """A workspace's access record (owner, template, shares); empty when it has none."""
    return read_json(folder / ACCESS, {}) or {}


def _update_access(folder: Path, **changes: object) -> dict:
    with file_lock(folder / ".lock"):
        record = read_access(folder)
        record.update(changes)
        _write_json(folder / ACCESS, record)
        return record


def touch(folder: Path) -> None:
    """Mark a workspace as used now (the idle clean-up's clock)."""
    p = folder / USED
    try:
        p.touch()
        os.utime(p)
    except OSError:
        pass


def last_used(folder: Path) -> float:
    """When a workspace was last opened (its ``.used`` stamp, else its record's or folder's time); 0 if gone."""
    for p in (folder / USED, folder / ACCESS, folder):
        try:
            return p.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _is_workspace(folder: Path) -> bool:
    return (folder / SETTINGS).is_file() and (folder / TILE).is_file()


# --------------------------------------------------------------------------- templates


def _builders() -> dict:
    from refiner.app.demos import REAL_DEMOS, create_demo, create_real_demo

    return {DEMO_NAME: create_demo, **{name: create_real_demo for name in REAL_DEMOS}}


def template_names() -> list[str]:
    """The templates this server can build: the synthetic demo and the real-imagery demos."""
    return list(_builders())


def template(root: str | Path, name: str) -> Workspace:
    """The read-only template ``name`` (the demo, a real demo), built on first use, once.

    Built into ``templates/`` under a lock, marked complete last; a half-built one from a crash is
    rebuilt. The returned workspace refuses every change.
    """
    builders = _builders()
    if name not in builders:
        raise ValueError(f"there is no shipped demo called {name!r}: pick one of {', '.join(builders)}")
    folder = Path(root) / TEMPLATES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with file_lock(folder / f".{name}.lock"):
        if not (read_access(path).get("is_template") and _is_workspace(path)):
            shutil.rmtree(path, ignore_errors=True)
            builders[name](folder, name)
            _write_json(path / ACCESS, {"owner": None, "template": name, "is_template": True, "shares": {}})
    return Workspace(path, readonly=TEMPLATE_READ)


def _copy_tree(src: Path, space: Path, name: str, access: dict) -> Path:
    """Copy a workspace folder to ``space/name`` whole or not at all (through a hidden temp folder)."""
    space.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=space, prefix=f".{name}.", suffix=".tmp"))
    try:
        inner = tmp / "w"
        shutil.copytree(src, inner, ignore=shutil.ignore_patterns(ACCESS, USED, ".lock", "jobs", "undo", "*.tmp"))
        _write_json(inner / ACCESS, access)
        touch(inner)
        dst = space / name
        os.rename(inner, dst)  # refuses to replace a workspace already there
        return dst
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the session


@dataclass(frozen=True)
class Session:
    """One owner's view of the workspaces root: its own workspaces, and what is shared with it."""

    root: Path
    key: str  # "browser:<token>" or "user:<issuer>|<subject>"

    @property
    def owner(self) -> str:
        """The owner id that access records store: the SHA-256 of the session key."""
        return digest(self.key)

    @property
    def space(self) -> Path:
        """The folder of this owner's workspaces."""
        return Path(self.root) / OWNERS / self.owner[:32]

    # ----------------------------------------------------------------- own workspaces
    def _owns(self, folder: Path) -> bool:
        return read_access(folder).get("owner") == self.owner

    def names(self) -> list[str]:
        """This session's workspaces (names, sorted)."""
        if not self.space.is_dir():
            return []
        return sorted(
            p.name for p in self.space.iterdir() if not p.name.startswith(".") and _is_workspace(p) and self._owns(p)
        )

    def workspaces(self) -> list[Workspace]:
        """This session's workspaces (not marked as used: for checks such as one job at a time)."""
        return [Workspace(self.space / n) for n in self.names()]

    def last_used(self) -> str | None:
        """The workspace this session used last (what a new tab or a restart opens)."""
        names = self.names()
        return max(names, key=lambda n: last_used(self.space / n)) if names else None

    def open(self, name: str) -> Workspace:
        """One of this session's workspaces; another session's name is "not there", as a missing one."""
        name = check_name(name)
        try:
            ws = Workspace.open(self.space, name)
        except ValueError as exc:
            if "no workspace" not in str(exc):
                raise
            ws = None  # the message names a server folder: say it the session's way
        if ws is None or not self._owns(ws.path):
            raise ValueError(f"you have no workspace called {name!r}: pick one of yours or create it")
        touch(ws.path)
        return ws

    def create(
        self, name: str, tile: Tile, classes: ClassSpec, *, source: dict | None = None, overwrite: bool = False
    ) -> Workspace:
        """A new workspace of this session's (see :meth:`Workspace.create`)."""
        name = check_name(name)
        if name in template_names():
            raise ValueError(f"{name!r} is the name of a shipped demo (open it on the Demo tab): pick another name")
        if overwrite and (self.space / name).exists() and not self._owns(self.space / name):
            raise ValueError(f"you have no workspace called {name!r}")
        ws = Workspace.create(self.space, name, tile, classes, source=source, overwrite=overwrite)
        _write_json(ws.path / ACCESS, {"owner": self.owner, "template": None, "shares": {}})
        touch(ws.path)
        return ws

    def open_template_copy(self, name: str) -> Workspace:
        """This session's copy of the template ``name``, made from it on first use."""
        if (self.space / name).is_dir() and self._owns(self.space / name):
            return self.open(name)
        src = template(self.root, name)
        try:
            _copy_tree(src.path, self.space, name, {"owner": self.owner, "template": name, "shares": {}})
        except OSError:
            if not self._owns(self.space / name):  # not a copy made meanwhile by another tab
                raise ValueError(f"a workspace called {name!r} is in the way of your copy of the demo") from None
        return self.open(name)

    def reset(self, name: str) -> Workspace:
        """Replace this session's copy of a template by a fresh copy (its share links are kept).

        Only the session's own copy changes: the template and everybody else's copies stay.
        """
        from refiner.app.jobs.base import active_job

        ws = self.open(name)
        record = read_access(ws.path)
        tpl = record.get("template")
        if not tpl:
            raise ValueError(f"{name!r} is not a copy of a shipped demo, so there is nothing to reset it to")
        busy = active_job(ws)
        if busy:
            raise RuntimeError(f"a {busy} is going in {name!r}: cancel it or wait for it to finish, then reset")
        src = template(self.root, tpl)
        trash = self.space / f".{name}.{secrets.token_hex(4)}.old.tmp"
        with file_lock(self.space / f".{name}.reset.lock"):
            os.rename(ws.path, trash)
            try:
                _copy_tree(src.path, self.space, name, {**record, "owner": self.owner})
            except BaseException:
                os.rename(trash, ws.path)
                raise
        shutil.rmtree(trash, ignore_errors=True)
        return self.open(name)

    # ----------------------------------------------------------------- sharing
    def share(self, name: str, mode: str = "read") -> str:
        """A new share link token for ``name`` (``read`` or ``edit``); the previous one of that mode stops working."""
        if mode not in MODES:
            raise ValueError(f"a share link is {' or '.join(MODES)}, not {mode!r}")
        ws = self.open(name)
        token = new_token()
        with file_lock(ws.path / ".lock"):
            record = read_access(ws.path)
            shares = {h: m for h, m in (record.get("shares") or {}).items() if m != mode}
            shares[digest(token)] = mode
            record["shares"] = shares
            _write_json(ws.path / ACCESS, record)
        return token

    def shared_modes(self, name: str) -> list[str]:
        """Which kinds of share link of ``name`` work now."""
        return sorted(set((read_access(self.space / name).get("shares") or {}).values()))

    def unshare(self, name: str) -> None:
        """Every share link of ``name`` stops working."""
        ws = self.open(name)
        _update_access(ws.path, shares={})

    def open_shared(self, token: str) -> Workspace:
        """The workspace a share link names, read-only unless the link is editable."""
        found = find_share(self.root, token)
        if found is None:
            raise ValueError("this share link does not work (any more): ask the workspace's owner for a new one")
        folder, mode = found
        touch(folder)
        if self._owns(folder):
            return Workspace(folder)
        return Workspace(folder, readonly="" if mode == "edit" else SHARED_READ)

    def busy(self) -> str:
        """What job of this session's is running now ("" when none), e.g. "training run in 'demo'"."""
        from refiner.app.jobs.base import active_job

        for ws in self.workspaces():
            kind = active_job(ws)
            if kind:
                return f"{kind} in {ws.name!r}"
        return ""


_SHARES: dict[str, Path] = {}  # share digest -> folder, a cache checked against the access file


def find_share(root: str | Path, token: str) -> tuple[Path, str] | None:
    """The workspace folder and mode a share token opens, or None."""
    if not valid_token(token):
        return None
    h = digest(token)
    candidates = [_SHARES[h]] if h in _SHARES else []
    owners = Path(root) / OWNERS
    if not candidates and owners.is_dir():
        candidates = [p.parent for p in owners.glob(f"*/*/{ACCESS}")]
    for folder in candidates:
        mode = (read_access(folder).get("shares") or {}).get(h)
        if mode in MODES and _is_workspace(folder):
            _SHARES[h] = folder
            return folder, mode
    _SHARES.pop(h, None)
    return None


# --------------------------------------------------------------------------- idle clean-up


def cleanup(root: str | Path, hours: float | None = None, *, now: float | None = None) -> list[Path]:
    """Remove session workspaces nobody opened for ``hours`` (``$REFINER_SESSION_TTL_HOURS``, 72).

    Never a template, never one with a job going, never one opened recently by anyone (a share
    link's use counts). Also removes copies left half-made by a crash. Returns what it removed.
    """
    from refiner.app.jobs.base import active_job

    hours = ttl_hours() if hours is None else hours
    now = time.time() if now is None else now
    owners = Path(root) / OWNERS
    removed: list[Path] = []
    if not owners.is_dir():
        return removed
    for space in owners.iterdir():
        if not space.is_dir():
            continue
        for folder in space.iterdir():
            stale = now - last_used(folder) > hours * 3600
            if folder.name.startswith(".") and folder.name.endswith(".tmp") and folder.is_dir():
                if now - last_used(folder) > 3600:  # a copy or a reset that crashed
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            if not (folder.is_dir() and _is_workspace(folder)) or not stale or active_job(Workspace(folder)):
                continue
            trash = space / f".{folder.name}.{secrets.token_hex(4)}.gone.tmp"
            try:
                os.rename(folder, trash)  # gone at once for every page; deleted after
            except OSError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(folder)
        if not any(space.iterdir()):
            space.rmdir()
    return removed


_CLEANUP_LOCK = threading.Lock()


def cleanup_if_due(root: str | Path, every: float = 3600.0) -> list[Path]:
    """Run :func:`cleanup` at most once per ``every`` seconds per root (at server start, then hourly).

    The clock is ``<root>/.cleanup``'s modification time, so several server processes share it.
    """
    stamp = Path(root) / ".cleanup"
    with _CLEANUP_LOCK:
        try:
            if time.time() - stamp.stat().st_mtime < every:
                return []
        except OSError:
            pass
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
        os.utime(stamp)
        return cleanup(root)
