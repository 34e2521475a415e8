"""`sift serve --runs DIR`: a read-only web view of the runs under DIR, with a JSON API behind every page.

Pages (server-rendered with Jinja2, a few lines of plain JavaScript for the live refresh, no build step):

    /                                   runs, each with its status per stage and progress
    /runs/{run}                         live funnel, stage progress and throughput, `sift stats` plots, config
    /runs/{run}/lookup?q=...            "why was this document removed?" by URL, domain or doc_id
    /runs/{run}/shards                  document and token shards
    /runs/{run}/shards/{stage}/{shard}  page through a document shard
    /runs/{run}/tokens/{split}/{shard}  a token shard decoded back to text
    /runs/{run}/doc/{stage}/{shard}/{row}  one document in full

The same answers as JSON under /api (OpenAPI schema at /openapi.json, interactive docs at /api/docs).
Served by uvicorn locally, or by Ray Serve on a cluster (`--ray-serve`).
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from pipelines.serve import catalog

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def _guard(fn, *args, **kwargs):
    """Catalog errors as HTTP answers: unknown names are 404, bad parameters 400."""
    try:
        return fn(*args, **kwargs)
    except catalog.NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc


def create_app(runs_root: str) -> FastAPI:
    """The service for the runs under `runs_root` (a local folder or an s3:// / gs:// prefix)."""
    app = FastAPI(
        title="sift serve",
        summary="Curation runs: live funnel, document lookup with removal evidence, shard browser.",
        version="1",
        docs_url="/api/docs",
        redoc_url=None,
    )
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    templates.env.filters["thousands"] = lambda v: f"{v:,}" if isinstance(v, (int, float)) else v
    app.state.runs_root = runs_root

    def run_of(name: str) -> catalog.Run:
        return _guard(catalog.get_run, runs_root, name)

    def page(request: Request, template: str, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, template, {"root": runs_root, **ctx})

    # ---- JSON API (specific routes before the catch-all run route: run names may contain '/') ----

    @app.get("/api/runs", tags=["runs"], summary="Every run under the served folder, with per-stage status")
    def api_runs() -> list[dict[str, Any]]:
        return [catalog.run_overview(r) for r in _guard(catalog.list_runs, runs_root)]

    @app.get("/api/runs/{name:path}/funnel", tags=["runs"],
             summary="Live funnel: documents in, out and dropped per stage and reason, from the stats written so far")
    def api_funnel(name: str) -> dict[str, Any]:
        return catalog.live_funnel(run_of(name))

    @app.get("/api/runs/{name:path}/report", tags=["runs"],
             summary="The numbers of `sift stats`: funnel, languages, quality and length, domains, clusters, tokens")
    def api_report(name: str) -> dict[str, Any]:
        return catalog.run_report(run_of(name))

    @app.get("/api/runs/{name:path}/plots", tags=["runs"], summary="Titles of the run's plots (PNG at /runs/{run}/plots/{i}.png)")
    def api_plots(name: str) -> list[str]:
        return [title for title, _ in catalog.run_figures(run_of(name))]

    @app.get("/api/runs/{name:path}/lookup", tags=["documents"],
             summary="Where a document is (shard and row) or which stage removed it, why, and the evidence")
    def api_lookup(name: str, q: str = Query(..., min_length=1, description="URL, domain or doc_id"),
                   key: str = Query("auto", pattern="^(auto|url|domain|doc_id)$")) -> dict[str, Any]:
        return _guard(catalog.lookup, run_of(name), q, key)

    @app.get("/api/runs/{name:path}/shards/{stage}/{shard}", tags=["shards"], summary="A page of a document shard")
    def api_documents(name: str, stage: str, shard: str, offset: int = Query(0, ge=0),
                      limit: int = Query(20, ge=1, le=500), full_text: bool = False) -> dict[str, Any]:
        return _guard(catalog.documents_page, run_of(name), stage, shard, offset, limit, None if full_text else 400)

    @app.get("/api/runs/{name:path}/shards", tags=["shards"], summary="Document shards per stage and token shards")
    def api_shards(name: str) -> dict[str, Any]:
        return catalog.list_shards(run_of(name))

    @app.get("/api/runs/{name:path}/tokens/{split}/{shard}", tags=["shards"],
             summary="Documents of a token shard decoded back to text")
    def api_tokens(name: str, split: str, shard: str, offset: int = Query(0, ge=0),
                   limit: int = Query(10, ge=1, le=100)) -> dict[str, Any]:
        return _guard(catalog.token_documents, run_of(name), split, shard, offset, limit)

    @app.get("/api/runs/{name:path}/doc/{stage}/{shard}/{row}", tags=["documents"], summary="One document in full")
    def api_document(name: str, stage: str, shard: str, row: int) -> dict[str, Any]:
        result = _guard(catalog.documents_page, run_of(name), stage, shard, row, 1, None)
        if not result["documents"]:
            raise HTTPException(status_code=404, detail=f"shard {shard} has {result['total']} rows, no row {row}")
        return result["documents"][0]

    @app.get("/api/runs/{name:path}", tags=["runs"], summary="One run: config, status and progress per stage")
    def api_run(name: str) -> dict[str, Any]:
        return catalog.run_overview(run_of(name))

    # ---- pages ----

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        return page(request, "index.html", runs=api_runs())

    @app.get("/runs/{name:path}/plots/{i}.png", include_in_schema=False)
    def plot_png(name: str, i: int) -> Response:
        figs = catalog.run_figures(run_of(name))
        if not 0 <= i < len(figs):
            raise HTTPException(status_code=404, detail="no such plot")
        return Response(base64.b64decode(figs[i][1]), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/runs/{name:path}/lookup", response_class=HTMLResponse, include_in_schema=False)
    def lookup_page(request: Request, name: str, q: str = "", key: str = "auto") -> HTMLResponse:
        run = run_of(name)
        result = _guard(catalog.lookup, run, q, key) if q.strip() else None
        return page(request, "lookup.html", run=catalog.run_overview(run), q=q, key=key, result=result)

    @app.get("/runs/{name:path}/shards/{stage}/{shard}", response_class=HTMLResponse, include_in_schema=False)
    def documents_html(request: Request, name: str, stage: str, shard: str, offset: int = Query(0, ge=0)) -> HTMLResponse:
        run = run_of(name)
        data = _guard(catalog.documents_page, run, stage, shard, offset, 20, 400)
        return page(request, "documents.html", run=catalog.run_overview(run), data=data)

    @app.get("/runs/{name:path}/shards", response_class=HTMLResponse, include_in_schema=False)
    def shards_html(request: Request, name: str) -> HTMLResponse:
        run = run_of(name)
        return page(request, "shards.html", run=catalog.run_overview(run), shards=catalog.list_shards(run))

    @app.get("/runs/{name:path}/tokens/{split}/{shard}", response_class=HTMLResponse, include_in_schema=False)
    def tokens_html(request: Request, name: str, split: str, shard: str, offset: int = Query(0, ge=0)) -> HTMLResponse:
        run = run_of(name)
        data = _guard(catalog.token_documents, run, split, shard, offset, 5)
        return page(request, "tokens.html", run=catalog.run_overview(run), data=data)

    @app.get("/runs/{name:path}/doc/{stage}/{shard}/{row}", response_class=HTMLResponse, include_in_schema=False)
    def document_html(request: Request, name: str, stage: str, shard: str, row: int) -> HTMLResponse:
        run = run_of(name)
        doc = api_document(name, stage, shard, row)
        return page(request, "document.html", run=catalog.run_overview(run), stage=stage, shard=shard, doc=doc)

    @app.get("/runs/{name:path}", response_class=HTMLResponse, include_in_schema=False)
    def run_html(request: Request, name: str) -> HTMLResponse:
        run = run_of(name)
        return page(request, "run.html", run=catalog.run_overview(run), live=catalog.live_funnel(run),
                    plots=[title for title, _ in catalog.run_figures(run)])

    return app


def app_builder(runs_root: str):
    """For `ray.serve.ingress`: a function (Serve tells builders from ASGI apps by that) that builds the app on
    each replica, so only the root travels, not the app."""

    def build() -> FastAPI:
        return create_app(runs_root)

    return build
