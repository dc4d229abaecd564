"""A small local Hugging Face Hub: enough of the protocol for `hf_hub_download`, on 127.0.0.1.

Two origins, like the real Hub: the hub answers `HEAD`/`GET /{org}/{name}/resolve/{revision}/{path}`;
small files come back directly (200, `ETag` = git blob sha1, `X-Repo-Commit`, `Content-Length`),
weight files answer 302 to a second "CDN" origin with `X-Linked-Etag` (sha256) and `X-Linked-Size`,
and the CDN serves the bytes with `Range` support. Errors are 404 with `X-Error-Code`
(RepoNotFound, RevisionNotFound, EntryNotFound). Faults can be injected (a connection dropped
mid-file) and every request is logged, so tests can assert "no download happened".

Writable (`LocalHub(..., writable=True)`, `--writable`): it also accepts what huggingface_hub sends
to publish a model, so `vit push` round-trips locally:
    POST /api/repos/create                       {"name", "organization", "visibility"} -> {"url"} (409: exists)
    POST /api/models/{repo}/branch/{branch}      a branch from main (409: exists)
    POST /api/validate-yaml                      a README's metadata: always valid
    POST /api/models/{repo}/preupload/{rev}      every file is "regular": its bytes come inline in the
                                                 commit, so neither LFS nor Xet storage is needed
    POST /api/models/{repo}/commit/{rev}         ndjson: header, file (base64), deletedFile, deletedFolder
                                                 -> {"commitOid", "commitUrl"}
Pushed repositories live in `storage/<org>/<name>/<branch>/` and are served like the others (weights
through the CDN origin). No token is checked.

Also a command, for the README, benchmarks and manual checks:
    python tests/hubserver.py --repo timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k=../shared/assets/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k
    python tests/hubserver.py --port 8799 --writable
prints the HF_ENDPOINT to export and serves until interrupted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz", ".onnx")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.files = {p.relative_to(self.folder).as_posix(): p for p in sorted(self.folder.rglob("*")) if p.is_file()}
        digest = hashlib.sha1()
        self.sha256: dict[str, str] = {}
        for name, path in self.files.items():
            h = hashlib.sha256(path.read_bytes()).hexdigest()
            self.sha256[name] = h
            digest.update(f"{name}:{h}".encode())
        self.commit = digest.hexdigest()  # 40 hex, changes with the content


class LocalHub:
    """Start with `with LocalHub({"org/name": folder}) as hub:`; `hub.endpoint` is the HF_ENDPOINT."""

    def __init__(
        self,
        repos: dict[str, Path] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        writable: bool = False,
        storage: Path | None = None,
    ):
        self.refs: dict[str, dict[str, Repo]] = {rid: {"main": Repo(f)} for rid, f in (repos or {}).items()}
        self.writable = writable
        self._own_storage = writable and storage is None
        self.storage = Path(storage or tempfile.mkdtemp(prefix="hubserver-")) if writable else None
        self.created: dict[str, dict] = {}  # repo id -> what create-repo was sent (e.g. its visibility)
        self.commits: list[dict] = []  # every commit: repo, revision, summary, files added and deleted
        self.log: list[tuple[str, str, str]] = []  # (origin, method, path)
        self.drop_after: dict[str, int] = {}  # file name -> bytes sent before the connection is cut
        self.drops_left = 0  # how many transfers to cut (then serve normally)
        self._lock = threading.Lock()
        self.hub = ThreadingHTTPServer((host, port), self._handler("hub"))
        self.cdn = ThreadingHTTPServer((host, 0), self._handler("cdn"))
        self.hub.daemon_threads = self.cdn.daemon_threads = True
        self._threads = []

    @property
    def endpoint(self) -> str:
        return f"http://{self.hub.server_address[0]}:{self.hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://{self.cdn.server_address[0]}:{self.cdn.server_address[1]}"

    def downloads(self) -> list[str]:
        """Paths of file bodies that were sent (GETs), hub and CDN."""
        return [path for origin, method, path in self.log if method == "GET"]

    def start(self) -> LocalHub:
        for server in (self.hub, self.cdn):
            t = threading.Thread(target=server.serve_forever, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()
        if self._own_storage:
            shutil.rmtree(self.storage, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ protocol
    def _handler(self, origin: str):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                with hub._lock:
                    hub.log.append((origin, "POST", self.path))
                    if origin != "hub" or not hub.writable:
                        return hub._error(self, "Forbidden", "this local Hub is read-only", 403)
                    hub._write(self, data)

            def _serve(self, body: bool):
                with hub._lock:
                    hub.log.append((origin, self.command, self.path))
                if origin == "hub":
                    hub._serve_hub(self, body)
                else:
                    hub._serve_cdn(self, body)

        return Handler

    def _error(self, h, code: str, message: str, status: int = 404):
        payload = f'{{"error": "{message}"}}'.encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)

    def _serve_hub(self, h, body: bool):
        parts = unquote(h.path.split("?")[0]).lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(h, "RepoNotFound", "Repository not found")
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        branches = self.refs.get(repo_id)
        if branches is None:
            return self._error(h, "RepoNotFound", "Repository not found")
        repo = branches.get(revision) or next((r for r in branches.values() if r.commit == revision), None)
        if repo is None:
            return self._error(h, "RevisionNotFound", "Invalid rev id: " + revision)
        path = repo.files.get(filename)
        if path is None:
            return self._error(h, "EntryNotFound", f"{filename} does not exist on main")
        size = path.stat().st_size
        if filename.endswith(LFS_SUFFIXES):
            sha = repo.sha256[filename]
            h.send_response(302)
            h.send_header("Location", f"{self.cdn_url}/{repo_id}/{sha}?name={filename}")
            h.send_header("X-Linked-Etag", f'"{sha}"')
            h.send_header("X-Linked-Size", str(size))
            h.send_header("X-Repo-Commit", repo.commit)
            h.send_header("ETag", f'"{git_blob_sha1(path.read_bytes())}"')
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = path.read_bytes()
        h.send_response(200)
        h.send_header("ETag", f'"{git_blob_sha1(data)}"')
        h.send_header("X-Repo-Commit", repo.commit)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _serve_cdn(self, h, body: bool):
        path_part, _, query = h.path.partition("?")
        parts = unquote(path_part).lstrip("/").split("/")
        branches = self.refs.get("/".join(parts[:2]), {})
        name = unquote(query.split("name=", 1)[-1]) if "name=" in query else ""
        repo = next((r for r in branches.values() if r.sha256.get(name) == parts[-1]), None)
        if repo is None or name not in repo.files or repo.sha256[name] != parts[-1]:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = repo.files[name].read_bytes()
        start, end = 0, len(data) - 1
        rng = h.headers.get("Range")
        status = 200
        if rng and rng.startswith("bytes="):
            a, _, b = rng[len("bytes=") :].partition("-")
            start = int(a) if a else 0
            end = int(b) if b else len(data) - 1
            status = 206
        chunk = data[start : end + 1]
        h.send_response(status)
        h.send_header("Content-Length", str(len(chunk)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Disposition", f'inline; filename="{name.rsplit("/", 1)[-1]}"')
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        h.end_headers()
        if not body:
            return
        with self._lock:
            cut = self.drops_left > 0 and name in self.drop_after
            if cut:
                self.drops_left -= 1
        if cut:
            h.wfile.write(chunk[: self.drop_after[name]])
            h.wfile.flush()
            h.close_connection = True
            try:
                import socket

                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        h.wfile.write(chunk)

    # ------------------------------------------------------------------ writing (huggingface_hub's upload)
    def _json(self, h, status: int, payload: dict):
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _folder(self, repo_id: str, branch: str) -> Path:
        return self.storage / repo_id / branch

    def _write(self, h, data: bytes):
        path = unquote(h.path.split("?")[0])
        if path == "/api/repos/create":
            body = json.loads(data or b"{}")
            repo_id = f"{body.get('organization') or 'local-user'}/{body['name']}"
            if repo_id in self.refs:
                return self._error(h, "RepoExists", "You already created this model repo", 409)
            folder = self._folder(repo_id, "main")
            folder.mkdir(parents=True, exist_ok=True)
            self.refs[repo_id] = {"main": Repo(folder)}
            self.created[repo_id] = body
            return self._json(h, 200, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            return self._json(h, 200, {"errors": [], "warnings": []})
        parts = path.lstrip("/").split("/")  # api models org name ACTION rev
        if len(parts) < 6 or parts[:2] != ["api", "models"]:
            return self._error(h, "EntryNotFound", f"no such endpoint: POST {path}")
        repo_id, action, revision = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
        branches = self.refs.get(repo_id)
        if branches is None:
            return self._error(h, "RepoNotFound", "Repository not found")
        if action == "branch":
            if revision in branches:
                return self._error(h, "BranchExists", f"branch {revision} already exists", 409)
            folder = self._folder(repo_id, revision)
            shutil.copytree(branches["main"].folder, folder)
            branches[revision] = Repo(folder)
            return self._json(h, 200, {})
        if revision not in branches:
            return self._error(h, "RevisionNotFound", "Invalid rev id: " + revision)
        if action == "preupload":
            files = json.loads(data or b"{}").get("files", [])
            return self._json(
                h,
                200,
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files
                    ]
                },
            )
        if action == "commit":
            return self._commit(h, repo_id, revision, data)
        return self._error(h, "EntryNotFound", f"no such endpoint: POST {path}")

    def _commit(self, h, repo_id: str, revision: str, data: bytes):
        folder = self.refs[repo_id][revision].folder
        summary, added, deleted = "", [], []
        for line in data.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                target = folder / value["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                raw = value["content"].encode()
                target.write_bytes(base64.b64decode(raw) if value.get("encoding") == "base64" else raw)
                added.append(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                target = folder / value["path"]
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
                deleted.append(value["path"])
            else:  # lfsFile: never asked for (preupload answers "regular")
                return self._error(h, "BadRequest", f"unsupported commit operation {key}", 400)
        repo = self.refs[repo_id][revision] = Repo(folder)
        self.commits.append(
            {
                "repo": repo_id,
                "revision": revision,
                "summary": summary,
                "added": added,
                "deleted": deleted,
                "oid": repo.commit,
            }
        )
        return self._json(
            h,
            200,
            {"success": True, "commitOid": repo.commit, "commitUrl": f"{self.endpoint}/{repo_id}/commit/{repo.commit}"},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve local folders as Hugging Face Hub model repos.")
    parser.add_argument(
        "--repo",
        action="append",
        default=[],
        metavar="ORG/NAME=FOLDER",
        help="a repo id and the folder that holds its files (repeatable)",
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--writable",
        action="store_true",
        help="also accept create-repo, pre-upload and commit requests (vit push, huggingface_hub)",
    )
    parser.add_argument("--storage", type=Path, help="where pushed repos are kept (default: a temporary folder)")
    args = parser.parse_args()
    if not args.repo and not args.writable:
        parser.error("give --repo ORG/NAME=FOLDER, or --writable to serve what is pushed")
    repos = {}
    for item in args.repo:
        rid, _, folder = item.partition("=")
        repos[rid] = Path(folder)
    hub = LocalHub(repos, port=args.port, writable=args.writable, storage=args.storage).start()
    print(f"export HF_ENDPOINT={hub.endpoint}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
