#!/usr/bin/env python3
"""Writes api/openapi.json (OpenAPI 3.1) for the routes of api/server.c.

Run after changing a route: python3 api/gen_openapi.py. The test test_api_openapi checks that
every route the server answers is in the document and that every $ref resolves."""
import json, os

S = lambda t, **k: dict(type=t, **k)
STR = S("string")
DEC = S("string", pattern=r"^-?[0-9]+(\.[0-9]+)?$", description="exact decimal as text")
INT_TXT = S("string", pattern=r"^-?[0-9]+$", description="integer as text (may exceed 2^53)")
TS = S("string", format="date-time")
NTS = {"type": ["string", "null"], "format": "date-time"}
NSTR = {"type": ["string", "null"]}
ref = lambda n: {"$ref": "#/components/schemas/" + n}

schemas = {
    "Problem": S("object", required=["type", "title", "status", "detail"], properties={
        "type": S("string", format="uri"), "title": STR, "status": S("integer"),
        "detail": STR, "instance": STR,
        "field": S("string", description="the request field or parameter at fault")}),
    "InvoiceLine": S("object", required=["line_no", "kind", "description", "amount_exact", "amount"],
        properties={"line_no": S("integer"),
                    "kind": S("string", enum=["usage", "tier", "allowance", "discount", "commitment", "credit", "adjustment"]),
                    "adjusted_kind": STR, "description": STR, "dimension": NSTR, "model": NSTR,
                    "site_tier": NSTR, "card_version": S("integer"), "band": S("integer"),
                    "quantity": S("string", pattern=r"^-?[0-9]+(\.[0-9]{6})?$", description="in the unit of unit_price: tokens, requests (dimension request), or GPU-seconds with 6 decimals (dimension gpu)"),
                    "unit": S("string", enum=["token", "gpu_second", "request"]),
                    "metered_quantity": INT_TXT, "metered_unit": S("string", enum=["token", "gpu_us", "request"]),
                    "unit_price": DEC, "amount_exact": DEC, "amount": DEC,
                    "discount_share": DEC, "credit_share": DEC,
                    "corrects_period": {"type": ["string", "null"], "pattern": r"^[0-9]{4}-[0-9]{2}$", "description": "adjustment lines: the month they correct (YYYY-MM); null on every other line (always present)"},
                    "gpu_basis": {"type": ["string", "null"], "enum": ["requests", "windows", None], "description": "dimension gpu: where the contract bills GPU time from (docs/rating.md, GPU billing basis); null on other lines"},
                    "variant": {"type": ["string", "null"], "pattern": r"^((batch|priority)(/ctx>[1-9][0-9]*)?|ctx>[1-9][0-9]*)?$", "description": "the price variant of a line with a dimension: '' (standard, base context), batch, priority, ctx>N, batch/ctx>N, priority/ctx>N (docs/rating.md, Price variants); null on money lines"}}),
    "Invoice": S("object", required=["invoice_id", "tenant", "period", "status"], properties={
        "invoice_id": STR, "tenant": STR, "issuer": STR,
        "period": S("string", pattern=r"^[0-9]{4}-[0-9]{2}$"), "period_start": TS, "period_end": TS,
        "status": S("string", enum=["draft", "finalized", "void"]), "number": NSTR, "currency": NSTR,
        "minor_units": S("integer"), "total": {"type": ["string", "null"]}, "usage_exact": DEC,
        "credited": DEC, "creditable": DEC, "live": S("boolean"), "created_at": NTS,
        "finalized_at": NTS, "voided_at": NTS,
        "lines": S("array", items=ref("InvoiceLine"))}),
    "InvoiceList": S("object", required=["items", "next_cursor"], properties={
        "items": S("array", items=ref("Invoice")), "next_cursor": NSTR}),
    "CreditNote": S("object", required=["credit_note_id", "number", "invoice_id", "amount"], properties={
        "credit_note_id": STR, "number": STR, "invoice_id": STR, "tenant": STR, "currency": STR,
        "amount": DEC, "reason": STR, "created_at": TS}),
    "CreditNoteList": S("object", required=["items", "next_cursor"], properties={
        "items": S("array", items=ref("CreditNote")), "next_cursor": NSTR}),
    "CreditNoteRequest": S("object", required=["amount", "reason"], additionalProperties=False, properties={
        "amount": DEC, "reason": S("string", minLength=1, maxLength=1000)}),
    "VoidRequest": S("object", required=["reason"], additionalProperties=False, properties={
        "reason": S("string", minLength=1, maxLength=1000)}),
    "Empty": S("object", additionalProperties=False),
    "Revenue": S("object", required=["period", "rows"], properties={
        "period": STR, "group_by": S("array", items=STR), "basis": STR,
        "rows": S("array", items=S("object", properties={
            "tenant": STR, "site": STR, "model": STR, "currency": STR, "amount_exact": DEC,
            "amount": DEC, "dimension_events": INT_TXT}))}),
    "Economics": S("object", required=["period", "basis", "group_by", "rows"], properties={
        "period": STR, "basis": S("string", enum=["requests", "windows"]), "group_by": S("array", items=STR), "rule": STR,
        "rows": S("array", items=S("object", properties={
            "site": STR, "tenant": STR, "model": STR, "revenue_currency": NSTR, "cost_currency": NSTR,
            "input_tokens": INT_TXT, "cached_tokens": INT_TXT, "output_tokens": INT_TXT, "gpu_us": INT_TXT,
            "revenue": DEC, "gpu_cost": {"type": ["string", "null"], "description": "exact decimal as text"},
            "margin": {"type": ["string", "null"], "description": "revenue - gpu_cost; null when an hour has no cost card or the currencies differ"},
            "cost_per_1m_output_tokens": {"type": ["string", "null"]},
            "revenue_per_1m_output_tokens": {"type": ["string", "null"]},
            "reference_per_1m_output_tokens": {"type": ["string", "null"]},
            "hours_without_cost_card": INT_TXT}))}),
    "RevenueSeries": S("object", required=["from", "to", "bucket", "series"], properties={
        "from": STR, "to": STR, "bucket": S("string", enum=["day", "month"]), "basis": STR,
        "series": S("array", items=S("object", properties={
            "bucket_start": TS, "currency": STR, "amount_exact": DEC, "amount": DEC,
            "dimension_events": INT_TXT}))}),
    "ReratingRequest": S("object", required=["period", "reason"], additionalProperties=False, properties={
        "period": S("string", pattern=r"^[0-9]{4}-[0-9]{2}$"), "tenant": NSTR,
        "dry_run": S("boolean"), "reason": S("string", minLength=1, maxLength=1000)}),
    "ReratingResult": S("object", required=["dry_run", "lines"], properties={
        "run_id": {"type": ["integer", "null"]}, "dry_run": S("boolean"), "period": STR,
        "tenants_changed": S("integer"), "lines_changed": S("integer"), "delta_exact": DEC,
        "lines": S("array", items=S("object", properties={
            "tenant": STR, "period": STR, "invoice_id": NSTR, "invoice_status": STR, "currency": STR,
            "kind": STR, "dimension": NSTR, "model": NSTR, "site_tier": NSTR, "card_version": S("integer"),
            "band": S("integer"), "unit": STR, "quantity_before": STR, "quantity_after": STR,
            "unit_price_before": DEC, "unit_price_after": DEC, "amount_exact_before": DEC,
            "amount_exact_after": DEC, "amount_before": DEC, "amount_after": DEC, "delta": DEC}))}),
    "ReratingRunList": S("object", required=["items"], properties={"items": S("array", items=S("object", properties={
        "run_id": S("integer"), "period": STR, "tenant": NSTR, "requested_by": STR, "reason": STR,
        "created_at": TS, "tenants_changed": S("integer"), "lines_changed": S("integer"),
        "delta_exact": DEC, "delta_minor": S("object", additionalProperties=INT_TXT)}))}),
    "Usage": S("object", required=["tenant", "bucket", "series"], properties={
        "tenant": STR, "from": TS, "to": TS, "bucket": S("string", enum=["minute", "hour", "day"]),
        "group_by": S("array", items=STR), "currency": NSTR,
        "series": S("array", items=S("object", properties={
            "bucket_start": TS, "model": STR, "site": STR, "dimension": STR, "unit": STR,
            "quantity": INT_TXT, "input_tokens": INT_TXT, "cached_tokens": INT_TXT,
            "output_tokens": INT_TXT, "gpu_us": INT_TXT, "cache_write_tokens": INT_TXT,
            "reasoning_tokens": INT_TXT, "requests": INT_TXT, "amount_exact": DEC, "amount": DEC}))}),
    "BudgetRequest": S("object", required=["currency", "monthly_limit"], additionalProperties=False, properties={
        "currency": S("string", pattern="^[A-Z]{3}$"), "monthly_limit": DEC,
        "thresholds_percent": S("array", items=S("integer", minimum=1, maximum=1000), minItems=1, maxItems=16),
        "hard_limit": S("boolean"), "customer_may_set": S("boolean", description="admins only")}),
    "Budget": S("object", required=["tenant", "currency", "monthly_limit", "thresholds_percent", "hard_limit", "customer_may_set"], properties={
        "tenant": STR, "currency": STR, "monthly_limit": DEC,
        "thresholds_percent": S("array", items=S("integer")), "hard_limit": S("boolean"),
        "customer_may_set": S("boolean")}),
    "Entitlement": S("object", required=["tenant", "period", "allowed", "reason", "as_of", "stale_us", "source"], properties={
        "tenant": STR, "period": STR, "allowed": S("boolean"),
        "reason": S("string", enum=["no budget", "within budget", "monthly limit reached"]),
        "currency": NSTR, "limit": {"type": ["string", "null"], "description": "exact decimal"},
        "spend": {"type": ["string", "null"], "description": "exact decimal: the month's list amount of committed charges"},
        "hard_limit": S("boolean"), "thresholds_percent": S("array", items=S("integer")),
        "thresholds_crossed": S("array", items=S("integer")),
        "spend_as_of": NTS, "age_us": {"type": ["integer", "null"], "description": "answer time - spend_as_of, microseconds"},
        "as_of": S("string", format="date-time", description="every charge committed before this instant is in spend"),
        "stale_us": S("integer", minimum=0, description="answer time - as_of, microseconds; at most entitlement_max_stale_ms x 1000 from memory"),
        "source": S("string", enum=["memory", "database"], description="memory: the pushed mirror; database: a direct query")}),
    "Spend": S("object", required=["tenant", "period", "month_to_date", "projection"], properties={
        "tenant": STR, "period": STR, "as_of": TS, "currency": NSTR,
        "month_to_date": S("object", properties={"list_amount_exact": DEC, "list_amount": DEC,
                                                 "draft_invoice_total": DEC}),
        "projection": S("object", properties={"list_amount": DEC, "method": STR}),
        "commitment": {"type": ["object", "null"], "description": "the contract's monthly minimum (kind monthly_minimum) or total over a term (kind term_total, docs/rating.md Total over a term); null when none",
                       "properties": {"kind": S("string", enum=["monthly_minimum", "term_total"]),
                                      "currency": STR, "monthly_minimum": DEC,
                                      "term_total": DEC, "true_up_period": S("string", description="YYYY-MM: the term's last month, whose invoice carries the true-up"),
                                      "in_term": S("boolean"), "true_up_this_month": S("boolean"),
                                      "spent_in_term": {"type": ["string", "null"], "description": "term_total: usage + allowance + discount of the term's months through this month's draft; null outside the term"},
                                      "remaining": {"type": ["string", "null"], "description": "term_total: max(0, term_total - spent_in_term); null outside the term"},
                                      "this_month_minimum": S("string", pattern=r"^[0-9]+(\.[0-9]+)?$", description="the monthly minimum pro-rated by the seconds of this month inside the commitment term (half to even); 0 outside the term"),
                                      "term_seconds_this_month": S("integer"), "seconds_this_month": S("integer"),
                                      "term_start": NTS, "term_end": NTS,
                                      "shortfall_so_far": S("string", pattern=r"^-?[0-9]+(\.[0-9]+)?$", description="the draft's commitment line: what the month would add to reach the minimum if it ended now (term_total: the true-up, in the term's last month only)")}},
        "free_allowances": {"type": ["object", "null"], "description": "the contract's free units per month, by dimension; null when none",
                            "additionalProperties": S("object", properties={"per_month": STR, "unit": STR, "used_this_month": STR, "value_this_month": DEC})},
        "credit": {"type": ["object", "null"], "description": "the contract's prepaid credit; null when none",
                   "properties": {"currency": STR, "granted": DEC, "balance_at_month_start": DEC,
                                  "used_this_month": S("string", pattern=r"^-?[0-9]+(\.[0-9]+)?$", description="drawn by the draft invoice so far"),
                                  "remaining": DEC}}}),
    "Tenant": S("object", required=["tenant"], properties={
        "tenant": STR, "display_name": STR, "issuer": STR, "created_at": NTS,
        "contract_version": {"type": ["integer", "null"]}}),
    "TenantList": S("object", required=["items"], properties={"items": S("array", items=ref("Tenant"))}),
    "TenantRequest": S("object", required=["tenant"], additionalProperties=False, properties={
        "tenant": S("string", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
        "display_name": S("string", maxLength=200), "issuer": S("string", pattern=r"^[A-Z0-9]{1,16}$")}),
    "Document": S("object", description="a rate card or contract JSON document (docs/rating.md)"),
    "DocumentList": S("object", required=["items"], properties={"items": S("array", items=S("object", properties={
        "tenant": STR, "card_id": STR, "version": S("integer"), "currency": STR, "imported_at": TS,
        "document": ref("Document")}))}),
    "ImportResult": S("object", required=["message"], properties={"message": STR}),
    "CostCard": S("object", required=["site", "version", "valid_from", "currency", "gpu_hour_cost"], properties={
        "site": S("string", description="a site id, or * for the fleet default"), "version": S("integer"),
        "valid_from": TS, "currency": S("string", pattern=r"^[A-Z]{3}$"), "gpu_hour_cost": DEC,
        "reference_per_1m_output": {"type": ["string", "null"], "description": "exact decimal as text"},
        "note": NSTR, "imported_at": TS}),
    "CostCardList": S("object", required=["items"], properties={"items": S("array", items=ref("CostCard"))}),
    "CostCardRequest": S("object", required=["site", "valid_from", "currency", "gpu_hour_cost"], additionalProperties=False, properties={
        "site": STR, "valid_from": TS, "currency": S("string", pattern=r"^[A-Z]{3}$"),
        "gpu_hour_cost": S("string", pattern=r"^[0-9]+(\.[0-9]{1,12})?$"),
        "reference_per_1m_output": {"type": ["string", "null"], "pattern": r"^[0-9]+(\.[0-9]{1,12})?$"},
        "note": {"type": ["string", "null"], "maxLength": 500}}),
    "ApiKey": S("object", required=["key_id", "role"], properties={
        "key_id": STR, "role": S("string", enum=["admin", "finance", "customer"]), "tenant": NSTR,
        "name": STR, "created_at": NTS, "expires_at": NTS, "revoked_at": NTS}),
    "ApiKeyList": S("object", required=["items"], properties={"items": S("array", items=ref("ApiKey"))}),
    "ApiKeyRequest": S("object", required=["role"], additionalProperties=False, properties={
        "role": S("string", enum=["admin", "finance", "customer"]), "tenant": NSTR,
        "name": S("string", maxLength=200), "expires_at": NTS}),
    "ApiKeyCreated": S("object", required=["key_id", "role", "key"], properties={
        "key_id": STR, "role": STR, "tenant": NSTR, "expires_at": NTS,
        "key": {"type": ["string", "null"], "description": "shown once; null in Idempotency-Key replays"},
        "note": STR}),
    "Me": S("object", required=["key_id", "role", "tenant", "name", "expires_at", "server_time"], properties={
        "server_time": S("string", format="date-time", description="the server's clock (GRIDMETER_NOW moves it); clients compute 'now' from it, not from their own clock"),
        "key_id": STR, "role": S("string", enum=["admin", "finance", "customer"]),
        "tenant": {"type": ["string", "null"], "description": "a customer key's tenant; null for admin and finance"},
        "name": STR, "created_at": NTS, "expires_at": {"type": ["string", "null"], "format": "date-time", "description": "null: never expires"}}),
    "Ingest": S("object", required=["source", "messages", "consumer_lag"], properties={
        "source": STR, "fetched_at": TS,
        "messages": S("object", description="gridmeter_rater_messages_total by outcome", additionalProperties=INT_TXT),
        "consumer_lag": S("array", items=S("object", properties={"topic": STR, "partition": S("integer"), "lag": INT_TXT})),
        "batches": {"type": ["string", "null"], "description": "gridmeter_rater_batches_total"},
        "commit_seconds": S("object", properties={"sum": {"type": ["string", "null"]}, "count": {"type": ["string", "null"]}})}),
    "RevokeResult": S("object", properties={"key_id": STR, "revoked": S("boolean")}),
    "Health": S("object", properties={"status": STR, "postgresql": STR}),
}

def problem(desc):
    return {"description": desc, "content": {"application/problem+json": {"schema": ref("Problem")}}}

ERR = {"400": problem("malformed request: the field and rule are named"),
       "401": problem("missing, unknown, revoked or expired API key"),
       "403": problem("the key's role may not call this endpoint"),
       "404": problem("no such resource (also another tenant's, under a customer key)"),
       "429": problem("per-key rate limit; see Retry-After"),
       "503": problem("database unavailable or busy")}
POST_ERR = dict(ERR, **{"409": problem("invalid state, or the same Idempotency-Key in progress"),
                        "413": problem("body larger than the limit"),
                        "415": problem("Content-Type is not application/json"),
                        "422": problem("a rule is violated, or the Idempotency-Key was used with another body")})

def q(name, desc, schema=STR, required=False):
    return {"name": name, "in": "query", "required": required, "description": desc, "schema": schema}

def p(name, desc):
    return {"name": name, "in": "path", "required": True, "description": desc, "schema": STR}

IDEM = {"name": "Idempotency-Key", "in": "header", "required": True, "schema": S("string", minLength=1, maxLength=255),
        "description": "same key and body replays the first response; another body is a 422"}
CURSOR = q("cursor", "opaque cursor from next_cursor")
LIMIT = q("limit", "page size (1-200, default 50)", S("integer", minimum=1, maximum=200))
PERIOD = q("period", "billing month YYYY-MM (UTC)", S("string", pattern=r"^[0-9]{4}-[0-9]{2}$"))

def ok(schema, code="200", desc="OK", csv=False):
    c = {"application/json": {"schema": ref(schema)}}
    if csv:
        c["text/csv"] = {"schema": STR}
    return {code: {"description": desc, "content": c}}

def op(opid, summary, roles, resp, params=(), body=None, post=False, public=False, tags=()):
    o = {"operationId": opid, "summary": summary, "tags": list(tags),
         "description": summary + (". Roles: " + ", ".join(roles) if roles else ". Public."),
         "parameters": list(params) + ([IDEM] if post else []),
         "responses": dict(resp, **({} if public else (POST_ERR if post else ERR)))}
    if public:
        o["security"] = []
    if body:
        o["requestBody"] = {"required": body != "Empty", "content": {"application/json": {"schema": ref(body)}}}
    return o

INV = p("invoice_id", "inv_ + 32 hex digits")
TEN = p("tenant", "tenant id; a customer key sees only its own")
paths = {
    "/healthz": {"get": op("healthz", "Liveness", [], ok("Health"), public=True, tags=["operations"])},
    "/readyz": {"get": op("readyz", "Readiness (checks PostgreSQL)", [], dict(ok("Health"), **{"503": problem("PostgreSQL unreachable")}), public=True, tags=["operations"])},
    "/metrics": {"get": op("metrics", "Prometheus metrics: requests, latency, errors by route", ["admin"],
                           {"200": {"description": "Prometheus text format 0.0.4", "content": {"text/plain": {"schema": STR}}}}, tags=["operations"])},
    "/v1/openapi.json": {"get": op("openapi", "This document", [], {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": S("object")}}}}, public=True, tags=["operations"])},
    "/v1/me": {"get": op("me", "The calling key: role, tenant (customer keys), key id, name, expiry", ["admin", "finance", "customer"], ok("Me"), tags=["operations"])},
    "/v1/ops/ingest": {"get": op("opsIngest", "The rater's ingest metrics (messages by outcome, consumer lag, batches, commit time), fetched from its /metrics", ["admin", "finance"],
                                 dict(ok("Ingest"), **{"503": problem("the rater's metrics are unreachable or not a rater's")}), tags=["operations"])},
    "/v1/invoices": {"get": op("listInvoices", "List invoices (drafts computed live); a customer key lists its own", ["finance", "customer"],
                               ok("InvoiceList"), [PERIOD, q("tenant", "tenant id"), q("status", "draft, finalized or void", S("string", enum=["draft", "finalized", "void"])), CURSOR, LIMIT], tags=["finance"])},
    "/v1/invoices/{invoice_id}": {"get": op("getInvoice", "One invoice with its lines (Accept: text/csv for CSV)", ["finance", "customer"],
                                            ok("Invoice", csv=True), [INV], tags=["finance"])},
    "/v1/invoices/{invoice_id}/finalize": {"post": op("finalizeInvoice", "Finalize a draft after the grace window: immutable, numbered", ["finance"], ok("Invoice"), [INV], "Empty", post=True, tags=["finance"])},
    "/v1/invoices/{invoice_id}/void": {"post": op("voidInvoice", "Void a finalized invoice through a credit note for what is still creditable", ["finance"], ok("Invoice"), [INV], "VoidRequest", post=True, tags=["finance"])},
    "/v1/invoices/{invoice_id}/credit-notes": {"post": op("createCreditNote", "Credit part of a finalized invoice (never more than creditable)", ["finance"], ok("CreditNote", "201", "Created"), [INV], "CreditNoteRequest", post=True, tags=["finance"])},
    "/v1/credit-notes": {"get": op("listCreditNotes", "List credit notes", ["finance"], ok("CreditNoteList"), [q("tenant", "tenant id"), q("invoice_id", "invoice id"), CURSOR, LIMIT], tags=["finance"])},
    "/v1/revenue": {"get": op("revenue", "A period's revenue (list amounts) by tenant, site and model; or, with from/to/bucket, a day or month series per currency", ["finance"],
                              {"200": {"description": "OK", "content": {"application/json": {"schema": {"oneOf": [ref("Revenue"), ref("RevenueSeries")]}}}}},
                              [PERIOD, q("group_by", "comma-separated subset of tenant,site,model (default all); with period only"),
                               q("from", "series: first month YYYY-MM", S("string", pattern=r"^[0-9]{4}-[0-9]{2}$")),
                               q("to", "series: month after the last (exclusive) YYYY-MM", S("string", pattern=r"^[0-9]{4}-[0-9]{2}$")),
                               q("bucket", "series: day (<= 366 days) or month (<= 120 months; default)", S("string", enum=["day", "month"]))], tags=["finance"])},
    "/v1/economics": {"get": op("economics", "A month's unit economics: GPU cost by the sites' cost cards, list revenue, margin and cost per 1M output tokens by site, tenant and/or model, losing rows first (Accept: text/csv for CSV)", ["admin", "finance"],
                                ok("Economics", csv=True),
                                [dict(PERIOD, required=True), q("basis", "requests (per-request gpu_us, per model; default) or windows (attributed GPU windows, model *)", S("string", enum=["requests", "windows"])),
                                 q("group_by", "comma-separated subset of site,tenant,model (default site)")], tags=["finance"])},
    "/v1/cost-cards": {"get": op("listCostCards", "Site cost cards (cost per GPU-hour per site, * = fleet default), every version", ["admin", "finance"], ok("CostCardList"), [q("site", "site id or *")], tags=["finance"]),
                       "post": op("createCostCard", "Add the next version of a site's cost card (versions are never rewritten)", ["admin"], ok("CostCard", "201", "Created"), body="CostCardRequest", post=True, tags=["admin"])},
    "/v1/rerating-runs": {"post": op("rerate", "Re-rate a month with the current rate cards: line-by-line diff (dry_run) or appended corrections", ["finance"],
                                     dict(ok("ReratingResult", "201", "Applied"), **ok("ReratingResult", "200", "Dry run")), body="ReratingRequest", post=True, tags=["finance"]),
                          "get": op("listReratingRuns", "Applied re-rating runs, newest first", ["finance"], ok("ReratingRunList"),
                                    [PERIOD, q("tenant", "tenant id")], tags=["finance"])},
    "/v1/tenants/{tenant}/usage": {"get": op("usage", "Usage time series of a tenant", ["customer", "finance"], ok("Usage"),
                                             [TEN, q("from", "RFC 3339 start (inclusive)", TS, True), q("to", "RFC 3339 end (exclusive)", TS, True),
                                              q("bucket", "minute (range <= 1 day), hour (<= 93 days) or day (<= 366 days); default hour", S("string", enum=["minute", "hour", "day"])),
                                              q("group_by", "comma-separated subset of model,site,dimension")], tags=["customer"])},
    "/v1/tenants/{tenant}/spend": {"get": op("spend", "Month-to-date spend and projection to month end", ["customer", "finance"], ok("Spend"), [TEN], tags=["customer"])},
    "/v1/tenants/{tenant}/entitlement": {"get": op("entitlement", "Whether the tenant is within its monthly budget (the hard-limit answer), with the spend, the limit and the age of the spend figure", ["admin", "customer", "finance"], ok("Entitlement"), [TEN], tags=["customer"])},
    "/v1/tenants/{tenant}/budget": {"post": op("setBudget", "Set (replace) the tenant's monthly budget; a customer key only where an admin set customer_may_set", ["admin", "customer"], ok("Budget"), [TEN], body="BudgetRequest", post=True, tags=["customer"])},
    "/v1/tenants/{tenant}/invoices": {"get": op("tenantInvoices", "A tenant's invoices", ["customer", "finance"], ok("InvoiceList"),
                                                [TEN, q("status", "draft, finalized or void", S("string", enum=["draft", "finalized", "void"])), CURSOR, LIMIT], tags=["customer"])},
    "/v1/tenants": {"get": op("listTenants", "Tenants (billing rows and contract tenants)", ["admin"], ok("TenantList"), tags=["admin"]),
                    "post": op("createTenant", "Create a tenant (issuer = invoice number series)", ["admin"], ok("Tenant", "201", "Created"), body="TenantRequest", post=True, tags=["admin"])},
    "/v1/tenants/{tenant}": {"get": op("getTenant", "One tenant", ["admin"], ok("Tenant"), [TEN], tags=["admin"])},
    "/v1/contracts": {"get": op("listContracts", "Contract versions", ["admin"], ok("DocumentList"), [q("tenant", "tenant id")], tags=["admin"]),
                      "post": op("importContract", "Import a contract (a changed one becomes the next version)", ["admin"], ok("ImportResult", "201", "Imported"), body="Document", post=True, tags=["admin"])},
    "/v1/rate-cards": {"get": op("listRateCards", "Rate card versions", ["admin"], ok("DocumentList"), [q("card_id", "card id")], tags=["admin"]),
                       "post": op("importRateCard", "Import a rate card version (never rewritten)", ["admin"], ok("ImportResult", "201", "Imported"), body="Document", post=True, tags=["admin"])},
    "/v1/api-keys": {"get": op("listApiKeys", "API keys (never the key itself)", ["admin"], ok("ApiKeyList"), tags=["admin"]),
                     "post": op("createApiKey", "Create an API key: shown once, stored as SHA-256", ["admin"], ok("ApiKeyCreated", "201", "Created"), body="ApiKeyRequest", post=True, tags=["admin"])},
    "/v1/api-keys/{key_id}": {"delete": op("revokeApiKey", "Revoke an API key for good", ["admin"], ok("RevokeResult"), [p("key_id", "key id")], tags=["admin"])},
}

doc = {"openapi": "3.1.0",
       "info": {"title": "gridmeter API", "version": "1.0.0",
                "description": "Invoices for finance, usage and spend for customers, tenants, contracts, rate cards and keys for admins. "
                               "Money is exact decimal text; amounts are rounded once per invoice line, half to even. See docs/api.md."},
       "servers": [{"url": "/"}],
       "security": [{"bearer": []}],
       "tags": [{"name": t} for t in ["finance", "customer", "admin", "operations"]],
       "paths": paths,
       "components": {"schemas": schemas,
                      "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "gmk_<key id>_<64 hex>"}}}}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.json")
with open(out, "w") as f:
    json.dump(doc, f, indent=1, sort_keys=False)
    f.write("\n")
