"""A loopback fake of the Hugging Face Hub for tests: an aiohttp server on 127.0.0.1 that
speaks the HTTP API the real `huggingface_hub` and `datasets` clients use for whoami, repo
create/info, file listing and download, preupload, LFS upload and commit (with
`HF_HUB_DISABLE_XET=1`). It keeps repos in memory, records every commit, and fails chosen
requests on demand.

    hub = FakeHub(users={"tok-write": ("alice", "write")}).start()
    env = hub.env("tok-write")   # HF_ENDPOINT, HF_TOKEN, HF_HUB_DISABLE_XET for a subprocess
    hub.fail("POST", "/commit/", 429, times=1, retry_after=1)

Not imitated: pagination, pull requests and refs, CDN redirects, Xet.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Stored:
    data: bytes
    lfs: bool

    @property
    def oid(self) -> str:  # what preupload and the tree report for this file
        return hashlib.sha256(self.data).hexdigest() if self.lfs else git_oid(self.data)


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[tuple[str, dict[str, Stored]]] = field(default_factory=list)

    def at(self, rev: str) -> tuple[str, dict[str, Stored]] | None:
        if rev in ("main", "HEAD"):
            return self.commits[-1]
        return next((c for c in self.commits if c[0] == rev), None)


@dataclass
class Failure:
    method: str
    path_part: str
    status: int
    times: int
    retry_after: float | None


class FakeHub:
    def __init__(self, users: dict[str, tuple[str, str]]) -> None:
        self.users = users  # token -> (user name, role "read" | "write")
        self.repos: dict[str, Repo] = {}
        self.commit_log: list[dict[str, Any]] = []  # {"repo", "summary", "paths"}
        self.requests: list[tuple[str, str, int]] = []
        self.failures: list[Failure] = []
        self.lfs: dict[str, bytes] = {}
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- control ------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            runner = web.AppRunner(self.app(), access_log=None)
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=serve, daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the fake Hub did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def env(self, token: str | None) -> dict[str, str]:
        env = {"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        if token is not None:
            env["HF_TOKEN"] = token
        return env

    def fail(
        self,
        method: str,
        path_part: str,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `times` requests whose path contains `path_part` with `status`."""
        self.failures.append(Failure(method, path_part, status, times, retry_after))

    def add_repo(self, repo_id: str, files: dict[str, bytes], private: bool = False) -> str:
        repo = self.repos.setdefault(repo_id, Repo(repo_id, private))
        if not repo.commits:
            repo.commits.append((hashlib.sha1(repo_id.encode()).hexdigest(), {}))
        tree = dict(repo.commits[-1][1])
        for path, data in files.items():
            tree[path] = Stored(data, path.endswith(".parquet"))
        return self._commit(repo, tree, "add files", list(files))

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        found = self.repos[repo_id].at(rev)
        return {p: s.data for p, s in found[1].items()} if found else {}

    def commits(self, repo_id: str) -> list[dict[str, Any]]:
        return [c for c in self.commit_log if c["repo"] == repo_id]

    # -- helpers ------------------------------------------------------------------------------

    def _commit(self, repo: Repo, tree: dict[str, Stored], summary: str, paths: list[str]) -> str:
        sha = hashlib.sha1(f"{repo.repo_id}{len(repo.commits)}{time.time()}".encode()).hexdigest()
        repo.commits.append((sha, tree))
        self.commit_log.append({"repo": repo.repo_id, "summary": summary, "paths": paths})
        return sha

    def _user(self, request: web.Request) -> tuple[str, str] | None:
        auth = request.headers.get("Authorization", "")
        return self.users.get(auth.removeprefix("Bearer ").strip()) if auth else None

    def _repo(self, request: web.Request, write: bool = False) -> Repo:
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        repo = self.repos.get(repo_id)
        user = self._user(request)
        visible = repo is not None and (
            not repo.private or (user and repo_id.startswith(user[0] + "/"))
        )
        if not visible:
            raise web.HTTPNotFound(
                headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
            )
        if write and (user is None or user[1] != "write" or not repo_id.startswith(user[0] + "/")):
            raise web.HTTPForbidden(
                headers={"X-Error-Message": "You don't have the rights to write to this repo"}
            )
        return repo

    def _rev(self, repo: Repo, rev: str) -> tuple[str, dict[str, Stored]]:
        found = repo.at(rev)
        if found is None:
            raise web.HTTPNotFound(
                headers={"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}
            )
        return found

    # -- the API ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler):
            for f in self.failures:
                if f.times > 0 and request.method == f.method and f.path_part in request.path:
                    f.times -= 1
                    self.requests.append((request.method, request.path, f.status))
                    headers = {"Retry-After": str(f.retry_after)} if f.retry_after else {}
                    await request.read()
                    return web.json_response(
                        {"error": "injected by the fake Hub"}, status=f.status, headers=headers
                    )
            try:
                response = await handler(request)
            except web.HTTPException as e:
                self.requests.append((request.method, request.path, e.status))
                raise
            self.requests.append((request.method, request.path, response.status))
            return response

        app = web.Application(middlewares=[record], client_max_size=1 << 30)
        repo = "/{kind:datasets}/{ns}/{name}"
        app.router.add_get("/api/whoami-v2", self.whoami)
        app.router.add_post("/api/repos/create", self.create)
        app.router.add_post("/api/validate-yaml", self.validate_yaml)
        app.router.add_get("/api" + repo, self.info)
        app.router.add_get("/api" + repo + "/revision/{rev}", self.info)
        app.router.add_get("/api" + repo + "/tree/{rev}", self.tree)
        app.router.add_get("/api" + repo + "/tree/{rev}/{path:.*}", self.tree)
        app.router.add_post("/api" + repo + "/preupload/{rev}", self.preupload)
        app.router.add_post("/api" + repo + "/commit/{rev}", self.commit)
        app.router.add_post("/{kind:datasets}/{ns}/{name}.git/info/lfs/objects/batch", self.batch)
        app.router.add_put("/lfs-upload/{oid}", self.lfs_put)
        app.router.add_get(repo + "/resolve/{rev}/{path:.*}", self.resolve)
        return app

    async def whoami(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            raise web.HTTPUnauthorized(
                headers={"X-Error-Message": "Invalid credentials in Authorization header"}
            )
        name, role = user
        token = {"role": role, "displayName": f"{name}-{role}"}
        return web.json_response({"type": "user", "name": name, "auth": {"accessToken": token}})

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        user = self._user(request)
        if user is None:
            raise web.HTTPUnauthorized(headers={"X-Error-Message": "Invalid credentials"})
        repo_id = f"{body.get('organization') or user[0]}/{body['name']}"
        url = {"url": f"{self.url}/datasets/{repo_id}"}
        if repo_id in self.repos:
            return web.json_response({**url, "error": "You already created this repo"}, status=409)
        if user[1] != "write" or not repo_id.startswith(user[0] + "/"):
            return web.json_response({"error": "no write access"}, status=403)
        private = body.get("private", body.get("visibility") == "private")
        self.repos[repo_id] = Repo(repo_id, bool(private))
        self.repos[repo_id].commits.append((hashlib.sha1(repo_id.encode()).hexdigest(), {}))
        return web.json_response(url)

    async def validate_yaml(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"errors": [], "warnings": []})

    async def info(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        sha, tree = self._rev(repo, request.match_info.get("rev", "main"))
        siblings = [{"rfilename": p} for p in sorted(tree)]
        info = {"id": repo.repo_id, "sha": sha, "private": repo.private, "siblings": siblings}
        readme = tree.get("README.md")
        if readme is not None:  # the Hub parses the card's YAML front matter into cardData
            text = readme.data.decode("utf-8", "replace")
            if text.startswith("---\n") and "\n---" in text[4:]:
                info["cardData"] = yaml.safe_load(text[4:].split("\n---", 1)[0]) or {}
        return web.json_response(info)

    async def tree(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        _, files = self._rev(repo, request.match_info["rev"])
        base = request.match_info.get("path", "").strip("/")
        recursive = request.query.get("recursive", "false").lower() in ("1", "true")
        entries: dict[str, dict] = {}
        for path, stored in sorted(files.items()):
            if base and not path.startswith(base + "/"):
                continue
            rest = path[len(base) + 1 :] if base else path
            parts = rest.split("/")
            prefix = base + "/" if base else ""
            for i in range(1, len(parts)):
                if not recursive and i > 1:
                    break
                d = prefix + "/".join(parts[:i])
                entries[d] = {"type": "directory", "oid": git_oid(d.encode()), "path": d}
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": git_oid(stored.data), "size": len(stored.data),
                         "path": path}  # fmt: skip
                if stored.lfs:
                    entry["lfs"] = {"oid": stored.oid, "size": len(stored.data), "pointerSize": 130}
                entries[path] = entry
        return web.json_response(list(entries.values()))

    async def preupload(self, request: web.Request) -> web.Response:
        repo = self._repo(request, write=True)
        _, tree = self._rev(repo, request.match_info["rev"])
        body = await request.json()
        files = []
        for f in body["files"]:
            lfs = f["path"].endswith(".parquet") or f.get("size", 0) > 10_000_000
            entry = {"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                     "shouldIgnore": False}  # fmt: skip
            if f["path"] in tree:
                entry["oid"] = tree[f["path"]].oid
            files.append(entry)
        return web.json_response({"files": files, "commitOid": repo.commits[-1][0]})

    async def batch(self, request: web.Request) -> web.Response:
        self._repo(request, write=True)
        body = await request.json()
        objects = []
        for obj in body["objects"]:
            out = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs:
                out["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
            objects.append(out)
        return web.json_response({"transfer": "basic", "objects": objects})

    async def lfs_put(self, request: web.Request) -> web.Response:
        data = await request.read()
        oid = request.match_info["oid"]
        if hashlib.sha256(data).hexdigest() != oid:
            return web.json_response({"error": "sha256 mismatch"}, status=400)
        self.lfs[oid] = data
        return web.Response(status=200)

    async def commit(self, request: web.Request) -> web.Response:
        repo = self._repo(request, write=True)
        _, parent = self._rev(repo, request.match_info["rev"])
        tree = dict(parent)
        summary, paths = "", []
        for line in (await request.read()).decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                tree[value["path"]] = Stored(base64.b64decode(value["content"]), False)
                paths.append(value["path"])
            elif key == "lfsFile":
                if value["oid"] not in self.lfs:
                    return web.json_response({"error": "LFS object not uploaded"}, status=422)
                tree[value["path"]] = Stored(self.lfs[value["oid"]], True)
                paths.append(value["path"])
            elif key == "deletedFile":
                tree.pop(value["path"], None)
                paths.append(value["path"])
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for p in [p for p in tree if p.startswith(prefix)]:
                    del tree[p]
                paths.append(value["path"])
        new = self._commit(repo, tree, summary, paths)
        return web.json_response(
            {"commitOid": new, "commitUrl": f"{self.url}/datasets/{repo.repo_id}/commit/{new}"}
        )

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        repo = self._repo(request)
        sha, tree = self._rev(repo, request.match_info["rev"])
        stored = tree.get(request.match_info["path"])
        if stored is None:
            raise web.HTTPNotFound(
                headers={"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}
            )
        data = stored.data
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_oid(data)}"', "Accept-Ranges": "bytes"}
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.oid}"', "X-Linked-Size": str(len(data))})
        status = 200
        match = re.match(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = int(match[2]) if match[2] else len(data) - 1
            data, status = data[start : end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{len(stored.data)}"
        headers["Content-Length"] = str(len(data))
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        return web.Response(body=data, status=status, headers=headers)
