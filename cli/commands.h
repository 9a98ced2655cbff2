/* The gridmeter subcommands, one line each: GM_CMD(name, function, summary).
 * Each function is `int fn(int argc, char **argv)` (argv[0] is the subcommand name) and
 * lives in cli/cmd_<name>.c; it returns the process exit status. Keep the list in the order
 * an operator meets the commands. */
// clang-format off
GM_CMD(migrate, gm_cmd_migrate, "apply the PostgreSQL schema migrations (idempotent)")
GM_CMD(ratecard, gm_cmd_ratecard, "validate rate cards and contracts, show a card's prices, import them into PostgreSQL")
GM_CMD(quote, gm_cmd_quote, "price usage events (JSON lines on stdin): each event's amount, invoice lines and totals")
GM_CMD(validate, gm_cmd_validate, "check usage events (JSON lines on stdin) against the contract")
GM_CMD(emit, gm_cmd_emit, "send usage events (JSON lines on stdin) to Kafka through the node client spool")
GM_CMD(agent, gm_cmd_agent, "the node agent: usage events over a Unix socket or loopback HTTP into the spool, with GPU accounting")
GM_CMD(loadgen, gm_cmd_loadgen, "simulate edge sites and nodes sending usage events; write the expected-totals manifest")
GM_CMD(rater, gm_cmd_rater, "consume usage events from Kafka and write the priced ledger, exactly once")
GM_CMD(shard, gm_cmd_shard, "sharded store: init and check the shard databases of a shard map, set up the coordinator (postgres_fdw)")
GM_CMD(rejects, gm_cmd_rejects, "the messages the rater refused: list, show, replay after a fix (exactly once)")
GM_CMD(gpu, gm_cmd_gpu, "GPU accounting: attribute an archive of kernel records to tenants per window (CPU or CUDA)")
GM_CMD(invoice, gm_cmd_invoice, "invoices from the command line: list, show, finalize, void, credit-note")
GM_CMD(close, gm_cmd_close, "close a billing month: create its drafts and finalize every draft past its grace window")
GM_CMD(rerate, gm_cmd_rerate, "re-rate a month after a price change: line-by-line diff, append-only corrections")
GM_CMD(webhooks, gm_cmd_webhooks, "deliver the webhook outbox: signed POSTs to the registered endpoints, retried with backoff")
GM_CMD(api, gm_cmd_api, "serve the REST API (invoices, usage, admin; OpenAPI at /v1/openapi.json)")
GM_CMD(apikey, gm_cmd_apikey, "create or revoke REST API keys (the first admin key of an install)")
GM_CMD(audit, gm_cmd_audit, "tamper evidence: verify the hash chains over the ledger, invoices and credit notes; write anchors")
GM_CMD(version, gm_cmd_version, "print the version and the libraries it was built with")
// clang-format on
