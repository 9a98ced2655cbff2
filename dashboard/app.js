// gridmeter dashboard: sign-in, the customer's usage/spend/invoices views and the finance and
// operator views, drawn from the public /v1 REST endpoints with the user's own API key.
//
// Rules this file keeps:
// - The key lives in memory and sessionStorage (this tab, this session) only; never in a URL,
//   never in localStorage or a cookie. The URL fragment holds only view state.
// - Money is shown exactly as the API returns it (decimal strings). Sums use BigInt on the
//   decimal digits (decAdd); floating point is used only for pixel heights in the charts.
// - Every request goes to an endpoint the API answers to this key; a customer key asking for
//   another tenant gets the API's 404 and the page says so (the page itself has no data).
'use strict';

(function () {
  const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
    '#7f7f7f', '#bcbd22', '#17becf'];
  const HOUR_MS = 3600e3, DAY_MS = 86400e3;
  const $ = (id) => document.getElementById(id);
  const SS_KEY = 'gridmeter.key', SS_TENANT = 'gridmeter.tenant', SS_ROLE = 'gridmeter.role';

  const session = { key: null, role: null, tenant: null };
  let lastSeries = null; // {header: [...], rows: [[...]]} of the usage table as shown
  let lastRevenue = null;
  let clockSkewMs = 0; // the server's clock minus this browser's, from GET /v1/me
  const nowMs = () => Date.now() + clockSkewMs;

  // ---- exact decimals -------------------------------------------------------------------
  // "-12.345" -> {n: -12345n, s: 3}
  function decParse(str) {
    const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(str));
    if (!m) throw new Error('not a decimal: ' + str);
    const frac = m[3] || '';
    let n = BigInt(m[2] + frac);
    if (m[1]) n = -n;
    return { n, s: frac.length };
  }
  function decFormat(d) {
    const neg = d.n < 0n;
    let digits = (neg ? -d.n : d.n).toString();
    if (d.s > 0) {
      digits = digits.padStart(d.s + 1, '0');
      digits = digits.slice(0, -d.s) + '.' + digits.slice(-d.s);
    }
    return (neg ? '-' : '') + digits;
  }
  function decAdd(a, b) {
    const x = typeof a === 'string' ? decParse(a) : a, y = typeof b === 'string' ? decParse(b) : b;
    const s = Math.max(x.s, y.s);
    return { n: x.n * 10n ** BigInt(s - x.s) + y.n * 10n ** BigInt(s - y.s), s };
  }
  function decSum(list, scaleIfEmpty) {
    let acc = { n: 0n, s: scaleIfEmpty || 0 };
    for (const v of list) acc = decAdd(acc, v);
    return decFormat(acc);
  }
  // Thousands separators on the integer part of a decimal string (display only).
  function group3(str) {
    const m = /^(-?)(\d+)(\.\d+)?$/.exec(String(str));
    if (!m) return String(str);
    return m[1] + m[2].replace(/\B(?=(\d{3})+(?!\d))/g, ',') + (m[3] || '');
  }
  // GPU-microseconds (integer string) -> seconds with 6 decimals, exact.
  function usToSeconds(us) {
    return decFormat({ n: BigInt(us), s: 6 });
  }
  // A number for drawing only (pixel heights).
  function toPlot(str) {
    return Number(str);
  }

  // ---- API access -------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, problem, retryAfter) {
      super((problem && (problem.detail || problem.title)) || ('HTTP ' + status));
      this.status = status;
      this.problem = problem;
      this.retryAfter = retryAfter;
    }
  }
  async function api(path, accept) {
    let res;
    try {
      res = await fetch(path, {
        headers: { Authorization: 'Bearer ' + session.key, Accept: accept || 'application/json' },
        cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
      });
    } catch (e) {
      throw new ApiError(0, { detail: 'cannot reach the server (' + e.message + ')' });
    }
    if (!res.ok) {
      let problem = null;
      try { problem = await res.json(); } catch (e) { /* not JSON */ }
      if (res.status === 401 && session.role) {
        // Revoked or expired while signed in: back to the sign-in form, key forgotten.
        forget();
        showSignin('Your key is no longer accepted (revoked or expired). Sign in with a valid key.');
      }
      throw new ApiError(res.status, problem, res.headers.get('Retry-After'));
    }
    if (accept && accept !== 'application/json') return res.text();
    return res.json();
  }
  // What to tell the user, by status: what happened and what to do.
  function explain(err, what) {
    const d = err.problem && err.problem.detail ? ' (' + err.problem.detail + ')' : '';
    switch (err.status) {
      case 0: return 'Could not reach the server while loading ' + what + d +
        '. Check your connection and try again.';
      case 401: return 'Your key was not accepted' + d + '. Sign out and sign in with a valid key.';
      case 403: return 'This key may not see ' + what + d + '. Ask your administrator for a key with that role.';
      case 404: return 'Nothing found: this key cannot see ' + what +
        '. A customer key sees only its own tenant; check the tenant in the address.';
      case 429: return 'Too many requests; wait ' + (err.retryAfter || 'a few') + ' s and try again.';
      case 400: return 'The request for ' + what + ' was refused' + d + '. Change the range or options.';
      default: return 'The server failed to load ' + what + ' (HTTP ' + err.status + ')' + d +
        '. Try again; if it keeps failing, tell your operator.';
    }
  }
  function setMsg(el, kind, text) {
    el.className = 'msg' + (kind ? ' ' + kind : '');
    el.textContent = text || '';
    el.dataset.state = kind || 'ok';
  }

  // ---- time ---------------------------------------------------------------------------------
  function iso(ms) { return new Date(ms).toISOString().replace('.000Z', 'Z'); }
  function floorTo(ms, unit) { return Math.floor(ms / unit) * unit; }
  function monthStart(ms) { const d = new Date(ms); return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1); }
  function monthName(ms) { return new Date(ms).toISOString().slice(0, 7); }
  // The [from, to) of a range choice, on whole buckets.
  function rangeOf(choice, bucket, now) {
    const unit = bucket === 'day' ? DAY_MS : HOUR_MS;
    const end = floorTo(now, unit) + unit;
    switch (choice) {
      case '24h': return [end - (bucket === 'day' ? 2 * DAY_MS : 24 * HOUR_MS), end];
      case '7d': return [floorTo(end - 7 * DAY_MS, unit), end];
      case '30d': return [floorTo(end - 30 * DAY_MS, unit), end];
      case 'mtd': return [monthStart(now), end];
      case 'prev': { const ms = monthStart(now); return [monthStart(ms - 1), ms]; }
      case 'custom': {
        const f = $('from').value, t = $('to').value;
        if (!f || !t) return null;
        return [Date.parse(f + 'T00:00:00Z'), Date.parse(t + 'T00:00:00Z') + DAY_MS];
      }
    }
    return null;
  }

  // ---- URL fragment: view state only ----------------------------------------------------
  function readHash() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ''));
    return Object.fromEntries(p.entries());
  }
  function writeHash(upd) {
    const p = new URLSearchParams(location.hash.replace(/^#/, ''));
    for (const [k, v] of Object.entries(upd)) {
      if (v === null || v === undefined || v === '') p.delete(k); else p.set(k, v);
    }
    p.delete('key'); // never: keys do not go into URLs
    const h = '#' + p.toString();
    if (h !== location.hash) history.replaceState(null, '', h);
  }

  // ---- sign-in -------------------------------------------------------------------------
  function showSignin(msg) {
    $('signin').hidden = false;
    for (const v of document.querySelectorAll('.view')) v.hidden = true;
    $('tabs').hidden = true;
    $('signout').hidden = true;
    $('who').textContent = '';
    setMsg($('signin-msg'), msg ? 'error' : '', msg || '');
    $('key').focus();
  }
  function forget() {
    session.key = session.role = session.tenant = null;
    try { sessionStorage.removeItem(SS_KEY); sessionStorage.removeItem(SS_TENANT); sessionStorage.removeItem(SS_ROLE); } catch (e) { /* ignore */ }
  }
  // The key's role and (customer keys) tenant, as the API states them: GET /v1/me.
  async function identify() {
    const me = await api('/v1/me');
    // "Now" is the server's clock (GRIDMETER_NOW can move it; a customer's clock can be wrong):
    // keep the difference and read the time through nowMs().
    if (me.server_time) clockSkewMs = Date.parse(me.server_time) - Date.now();
    return { role: me.role, tenant: me.role === 'customer' ? me.tenant : null };
  }
  async function signIn(key) {
    session.key = key;
    const btn = $('signin-btn');
    btn.disabled = true;
    setMsg($('signin-msg'), 'loading', 'Checking the key…');
    try {
      const who = await identify();
      session.role = who.role;
      session.tenant = who.tenant;
      try {
        sessionStorage.setItem(SS_KEY, key);
        sessionStorage.setItem(SS_ROLE, who.role);
        if (who.tenant) sessionStorage.setItem(SS_TENANT, who.tenant);
      } catch (e) { /* storage off: memory only */ }
      $('key').value = '';
      startApp();
      return true;
    } catch (e) {
      forget();
      const t = e.status === 401 ? 'This key was not accepted (unknown, revoked or expired). Check it and try again.'
        : explain(e, 'your account');
      showSignin(t);
      return false;
    } finally {
      btn.disabled = false;
    }
  }

  // ---- views -----------------------------------------------------------------------------
  function startApp() {
    $('signin').hidden = true;
    $('tabs').hidden = false;
    $('signout').hidden = false;
    $('tab-usage').hidden = session.role === 'admin';
    $('tab-invoices').hidden = session.role === 'admin';
    $('tab-finance').hidden = session.role !== 'finance';
    $('tab-operator').hidden = session.role === 'customer';
    $('who').textContent = session.role === 'customer' ? 'Customer: ' + session.tenant
      : session.role === 'finance' ? 'Finance' : 'Administrator';
    const h = readHash();
    if (!h.view) writeHash({ view: session.role === 'finance' ? 'finance' : session.role === 'admin' ? 'operator' : 'usage' });
    route();
  }
  // The tenant the customer views show: from the fragment when given (finance chooses one),
  // else the key's own tenant. A customer who edits the fragment gets the API's 404.
  function viewTenant() {
    const h = readHash();
    return h.tenant || session.tenant || null;
  }
  function route() {
    if (!session.key) return;
    const h = readHash();
    const view = h.view || 'usage';
    for (const a of document.querySelectorAll('#tabs a')) {
      if (a.dataset.view === view) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== 'view-' + view;
    if (view === 'usage') loadUsage();
    else if (view === 'invoices') loadInvoices(false);
    else if (view === 'finance') loadFinance();
    else if (view === 'operator') loadOperator();
  }

  // ---- usage view --------------------------------------------------------------------------
  function controlsFromHash() {
    const h = readHash();
    const set = (id, v, ok) => { if (v && ok.includes(v)) $(id).value = v; };
    set('range', h.range, ['24h', '7d', '30d', 'mtd', 'prev', 'custom']);
    set('bucket', h.bucket, ['hour', 'day']);
    set('group', h.group, ['model', 'site', 'dimension']);
    set('metric', h.metric, ['amount', 'tokens', 'gpu']);
    if (h.from) $('from').value = h.from;
    if (h.to) $('to').value = h.to;
    const custom = $('range').value === 'custom';
    $('from-l').hidden = $('to-l').hidden = !custom;
  }
  let usageSeq = 0;
  async function loadUsage() {
    const tenant = viewTenant();
    const seq = ++usageSeq;
    controlsFromHash();
    $('usage-tenant').textContent = tenant ? '— ' + tenant : '';
    if (!tenant) {
      setMsg($('usage-msg'), 'empty', 'Choose a tenant in the Finance view to see its usage.');
      $('usage-body').hidden = true;
      return;
    }
    $('usage-body').hidden = false;
    const t = encodeURIComponent(tenant);
    setMsg($('usage-msg'), 'loading', 'Loading month to date…');
    for (const id of ['mtd', 'projection', 'draft-total', 'tok-input', 'tok-cached', 'tok-cache-write', 'tok-output', 'tok-reasoning', 'gpu-s', 'commit-min', 'commit-short', 'credit-granted', 'credit-start', 'credit-used', 'credit-left']) $(id).textContent = '…';
    $('terms-note').textContent = '';
    $('commitment').textContent = '';
    const now = nowMs();
    const ms = monthStart(now), dayEnd = floorTo(now, DAY_MS) + DAY_MS;
    const cards = Promise.all([
      api('/v1/tenants/' + t + '/spend'),
      api('/v1/tenants/' + t + '/usage?bucket=day&from=' + iso(ms) + '&to=' + iso(dayEnd)),
    ]).then(async ([spend, month]) => {
      if (seq !== usageSeq) return;
      const cur = spend.currency || '';
      $('mtd').textContent = group3(spend.month_to_date.list_amount) + ' ' + cur;
      $('mtd').dataset.value = spend.month_to_date.list_amount;
      $('mtd-period').textContent = spend.period + ' as of ' + spend.as_of.slice(0, 16).replace('T', ' ') + ' UTC';
      $('projection').textContent = group3(spend.projection.list_amount) + ' ' + cur;
      $('projection').dataset.value = spend.projection.list_amount;
      $('projection-method').textContent = spend.projection.method;
      $('draft-total').textContent = group3(spend.month_to_date.draft_invoice_total) + ' ' + cur;
      $('draft-total').dataset.value = spend.month_to_date.draft_invoice_total;
      showTerms(spend);
      const sums = { input_tokens: [], cached_tokens: [], cache_write_tokens: [], output_tokens: [], reasoning_tokens: [], gpu_us: [] };
      for (const r of month.series) for (const k of Object.keys(sums)) sums[k].push(r[k]);
      const tot = {};
      for (const k of Object.keys(sums)) tot[k] = decSum(sums[k]);
      for (const [id, k] of [['tok-input', 'input_tokens'], ['tok-cached', 'cached_tokens'], ['tok-cache-write', 'cache_write_tokens'], ['tok-output', 'output_tokens'], ['tok-reasoning', 'reasoning_tokens']]) {
        $(id).textContent = group3(tot[k]);
        $(id).dataset.value = tot[k];
      }
      $('gpu-s').textContent = group3(usToSeconds(tot.gpu_us));
      $('gpu-s').dataset.value = usToSeconds(tot.gpu_us);
      if (!month.series.length) setMsg($('usage-msg'), 'empty', 'No usage recorded this month yet. Usage appears here within seconds of your requests being rated.');
      else setMsg($('usage-msg'), '', '');
      await loadBudget(t, seq);
      await loadCommitment(t, spend, cur, seq);
    }).catch((e) => {
      if (seq !== usageSeq) return;
      setMsg($('usage-msg'), 'error', explain(e, 'tenant ' + tenant));
      for (const id of ['mtd', 'projection', 'draft-total', 'tok-input', 'tok-cached', 'tok-cache-write', 'tok-output', 'tok-reasoning', 'gpu-s', 'commit-min', 'commit-short', 'credit-granted', 'credit-start', 'credit-used', 'credit-left']) $(id).textContent = '—';
      if (e.status === 404 || e.status === 401) $('usage-body').hidden = true;
      throw e;
    });
    try { await cards; } catch (e) { return; }
    await loadSeries(tenant, seq);
  }
  // The budget, its thresholds (crossed ones marked) and the hard-limit answer, as
  // /v1/tenants/{t}/entitlement states them.
  async function loadBudget(t, seq) {
    let e;
    try { e = await api('/v1/tenants/' + t + '/entitlement'); } catch (err) { e = null; }
    if (seq !== usageSeq) return;
    const ids = ['budget-limit', 'budget-spend', 'budget-thresholds', 'budget-status'];
    if (!e) { for (const id of ids) $(id).textContent = '—'; $('budget-note').textContent = 'The budget could not be read.'; return; }
    if (e.limit == null) {
      for (const id of ids.slice(0, 3)) { $(id).textContent = 'none'; delete $(id).dataset.value; }
      $('budget-status').textContent = 'allowed (no budget)';
      $('budget-note').textContent = 'No monthly budget is set for this tenant.';
      return;
    }
    // The API's 18 decimals, shown without trailing zeros (at least 2); data-value stays exact.
    const trim = (d) => d.includes('.') ? d.replace(/0+$/, '').replace(/\.(\d?)$/, (m, x) => '.' + (x + '00').slice(0, 2)) : d;
    $('budget-limit').textContent = group3(trim(e.limit)) + ' ' + e.currency;
    $('budget-limit').dataset.value = e.limit;
    $('budget-spend').textContent = group3(trim(e.spend)) + ' ' + e.currency;
    $('budget-spend').dataset.value = e.spend;
    const crossed = new Set(e.thresholds_crossed);
    $('budget-thresholds').textContent = e.thresholds_percent.map((p) => p + ' %' + (crossed.has(p) ? ' (reached)' : '')).join(', ');
    $('budget-status').textContent = e.allowed ? 'allowed' : 'refused: monthly limit reached';
    $('budget-note').textContent = (e.hard_limit ? 'Hard limit: requests are refused from the limit on.' : 'Soft limit: alerts only.') +
      (e.spend_as_of ? ' Spend as of ' + e.spend_as_of.slice(0, 19).replace('T', ' ') + ' UTC.' : '');
  }
  // The contract's monthly minimum and prepaid credit, as /v1/tenants/{t}/spend states them.
  function showTerms(spend) {
    const set = (id, v, cur) => {
      if (v == null) { $(id).textContent = 'none'; delete $(id).dataset.value; return; }
      $(id).textContent = group3(v) + ' ' + cur;
      $(id).dataset.value = v;
    };
    const c = spend.commitment, k = spend.credit;
    set('commit-min', c ? c.monthly_minimum : null, c ? c.currency : '');
    set('commit-month', c ? c.this_month_minimum : null, c ? c.currency : '');
    if (c && c.seconds_this_month && c.term_seconds_this_month !== c.seconds_this_month)
      $('commit-month').textContent += ' (pro-rated: ' + c.term_seconds_this_month + ' of '
        + c.seconds_this_month + ' s in the term)';
    set('commit-short', c ? c.shortfall_so_far : null, c ? c.currency : '');
    const term = !!(c && c.kind === 'term_total');
    // The labels follow the commitment's kind: a total over a term has no monthly minimum.
    $('commit-min-label').textContent = term ? 'Committed over the term' : 'Monthly minimum';
    $('commit-month-label').textContent = term ? 'Spent in the term' : 'Minimum this month';
    $('commit-short-label').textContent = term ? 'True-up on the draft' : 'Short of it so far';
    if (term) {
      // A total over a term: no monthly minimum; progress, and the true-up in the last month.
      set('commit-min', c.term_total, c.currency);
      $('commit-min').textContent += ' over the term (true-up in ' + c.true_up_period + ')';
      set('commit-month', c.spent_in_term, c.currency);
      if (c.spent_in_term != null)
        $('commit-month').textContent += ' spent in the term so far, ' + group3(c.remaining) + ' '
          + c.currency + ' remaining';
    }
    const fa = spend.free_allowances;
    $('allowances').textContent = !fa ? 'none' : Object.keys(fa).map((d) =>
      d + ': ' + group3(fa[d].used_this_month) + ' of ' + group3(fa[d].per_month) + ' ' + fa[d].unit
      + ' used (worth ' + group3(fa[d].value_this_month) + ')').join('; ');
    set('credit-granted', k ? k.granted : null, k ? k.currency : '');
    set('credit-start', k ? k.balance_at_month_start : null, k ? k.currency : '');
    set('credit-used', k ? k.used_this_month : null, k ? k.currency : '');
    set('credit-left', k ? k.remaining : null, k ? k.currency : '');
    $('terms-note').textContent = !c && !k ? 'The contract has no minimum commitment and no prepaid credit.'
      : 'From the contract; what is short of the minimum and the credit used are those of the draft invoice so far.';
  }
  // Commitment and credit as they stand on this month's draft invoice (its lines).
  async function loadCommitment(t, spend, cur, seq) {
    try {
      const list = await api('/v1/tenants/' + t + '/invoices?status=draft&limit=5');
      const draft = list.items.find((i) => i.period === spend.period);
      if (!draft) { $('commitment').textContent = 'No draft invoice for ' + spend.period + ' yet.'; return; }
      const inv = await api('/v1/invoices/' + encodeURIComponent(draft.invoice_id));
      if (seq !== usageSeq) return;
      const parts = [];
      const commit = inv.lines.filter((l) => l.kind === 'commitment').map((l) => l.amount);
      const credit = inv.lines.filter((l) => l.kind === 'credit').map((l) => l.amount);
      const disc = inv.lines.filter((l) => l.kind === 'discount').map((l) => l.amount);
      const free = inv.lines.filter((l) => l.kind === 'allowance').map((l) => l.amount);
      if (free.length) parts.push('free allowances ' + group3(decSum(free)) + ' ' + cur);
      const termTotal = spend.commitment && spend.commitment.kind === 'term_total';
      if (commit.length) parts.push((termTotal ? 'term commitment true-up ' : 'minimum commitment top-up ')
        + group3(decSum(commit)) + ' ' + cur);
      if (credit.length) parts.push('prepaid credit applied ' + group3(decSum(credit)) + ' ' + cur);
      if (disc.length) parts.push('discount ' + group3(decSum(disc)) + ' ' + cur);
      $('commitment').textContent = parts.length ? 'Includes ' + parts.join('; ') + '.'
        : 'No minimum commitment or prepaid credit applies this month.';
    } catch (e) {
      $('commitment').textContent = explain(e, 'the draft invoice');
    }
  }
  function seriesKey(row, group) { return group === 'dimension' ? row.dimension : row[group]; }
  // The value drawn for a row (the exact amount: rounded cents would flatten small bars).
  function metricOf(row, group, metric) {
    if (metric === 'amount') return row.amount_exact;
    if (group === 'dimension') {
      if (metric === 'gpu') return row.dimension === 'gpu' ? usToSeconds(row.quantity) : null;
      return row.dimension === 'gpu' || row.dimension === 'request' ? null : row.quantity;
    }
    if (metric === 'gpu') return usToSeconds(row.gpu_us);
    return decSum([row.input_tokens, row.cached_tokens, row.cache_write_tokens, row.output_tokens, row.reasoning_tokens]);
  }
  async function loadSeries(tenant, seq) {
    const bucket = $('bucket').value, group = $('group').value, metric = $('metric').value;
    const range = rangeOf($('range').value, bucket, nowMs());
    const msg = $('series-msg');
    if (!range || !(range[1] > range[0])) { setMsg(msg, 'error', 'Choose a start and an end date (the end on or after the start).'); return; }
    const maxDays = bucket === 'hour' ? 93 : 366;
    if (range[1] - range[0] > maxDays * DAY_MS) { setMsg(msg, 'error', 'Hourly buckets cover at most ' + maxDays + ' days: choose days, or a shorter range.'); return; }
    setMsg(msg, 'loading', 'Loading usage…');
    $('series-table').setAttribute('aria-busy', 'true');
    let data;
    try {
      data = await api('/v1/tenants/' + encodeURIComponent(tenant) + '/usage?bucket=' + bucket +
        '&from=' + iso(range[0]) + '&to=' + iso(range[1]) + '&group_by=' + group);
    } catch (e) {
      if (seq !== usageSeq) return;
      setMsg(msg, 'error', explain(e, 'usage of ' + tenant));
      drawEmpty();
      return;
    } finally {
      $('series-table').removeAttribute('aria-busy');
    }
    if (seq !== usageSeq) return;
    const cur = data.currency || '';
    let header, rows;
    // Each row shows its exact amount beside the rounded one: most hourly rows round to 0.00.
    const amt = 'amount' + (cur ? ' (' + cur + ')' : ''), exact = 'amount_exact' + (cur ? ' (' + cur + ')' : '');
    if (group === 'dimension') {
      header = ['bucket_start', 'dimension', 'quantity', 'unit', amt, exact];
      rows = data.series.map((r) => [r.bucket_start, r.dimension, r.quantity, r.unit, r.amount, r.amount_exact]);
    } else {
      header = ['bucket_start', group, 'input_tokens', 'cached_tokens', 'cache_write_tokens', 'output_tokens', 'reasoning_tokens', 'gpu_seconds', 'requests', amt, exact];
      rows = data.series.map((r) => [r.bucket_start, r[group], r.input_tokens, r.cached_tokens, r.cache_write_tokens, r.output_tokens, r.reasoning_tokens, usToSeconds(r.gpu_us), r.requests, r.amount, r.amount_exact]);
    }
    const numeric = header.map((h, i) => i >= 2 && h !== 'unit');
    const foot = header.map((h, i) => {
      if (i === 0) return 'Total';
      if (!numeric[i]) return '';
      if (group === 'dimension' && h === 'quantity') return '';
      return decSum(rows.map((r) => r[i]));
    });
    lastSeries = { header, rows, foot, name: 'usage-' + tenant + '-' + bucket + '-' + group + '-' + iso(range[0]).slice(0, 13) + '.csv' };
    renderTable($('series-table'), header, rows, numeric, foot);
    const unit = bucket === 'day' ? DAY_MS : HOUR_MS;
    const buckets = [];
    for (let x = range[0]; x < range[1]; x += unit) buckets.push(x);
    const keys = [...new Set(data.series.map((r) => seriesKey(r, group)))].sort();
    const values = new Map(); // key -> bucket -> number (drawing only)
    for (const r of data.series) {
      const v = metricOf(r, group, metric);
      if (v === null) continue;
      const k = seriesKey(r, group);
      if (!values.has(k)) values.set(k, new Map());
      const m = values.get(k);
      const b = Date.parse(r.bucket_start); // "…T22:00:00.000000Z" -> ms, like buckets[]
      m.set(b, (m.get(b) || 0) + toPlot(v));
    }
    const label = metric === 'amount' ? 'amount' + (cur ? ' (' + cur + ')' : '') : metric === 'gpu' ? 'GPU-seconds' : 'tokens';
    drawStacked($('chart'), $('legend'), buckets, keys.filter((k) => values.has(k)), values, bucket, label, tenant);
    if (!data.series.length) setMsg(msg, 'empty', 'No usage in this range. Choose a longer range (for example "Last 30 days").');
    else setMsg(msg, '', data.series.length + ' rows, ' + iso(range[0]) + ' to ' + iso(range[1]) + '.');
  }
  function drawEmpty() {
    $('chart').replaceChildren();
    $('chart').parentElement.hidden = true;
    $('legend').replaceChildren();
    renderTable($('series-table'), [], [], [], null);
    lastSeries = null;
  }

  // ---- tables and CSV ------------------------------------------------------------------------
  function renderTable(table, header, rows, numeric, foot) {
    const thead = table.tHead || table.createTHead(), tbody = table.tBodies[0] || table.createTBody();
    const tfoot = table.tFoot || table.createTFoot();
    thead.replaceChildren(); tbody.replaceChildren(); tfoot.replaceChildren();
    if (!header.length) return;
    const hr = thead.insertRow();
    header.forEach((h, i) => {
      const th = document.createElement('th');
      th.scope = 'col'; th.textContent = h; if (numeric[i]) th.className = 'num';
      hr.appendChild(th);
    });
    const frag = document.createDocumentFragment();
    for (const r of rows) {
      const tr = document.createElement('tr');
      r.forEach((c, i) => {
        const td = document.createElement('td');
        td.textContent = c === null || c === undefined ? '' : c;
        if (numeric[i]) td.className = 'num';
        tr.appendChild(td);
      });
      frag.appendChild(tr);
    }
    tbody.appendChild(frag);
    if (foot && rows.length) {
      const fr = tfoot.insertRow();
      foot.forEach((c, i) => { const td = fr.insertCell(); td.textContent = c; if (numeric[i]) td.className = 'num'; });
    }
  }
  // RFC 4180, CRLF; text cells that start with = + - @ get a leading ' (spreadsheet formulas)
  // unless they are numbers.
  function csvCell(v) {
    let s = v === null || v === undefined ? '' : String(v);
    if (/^[=+\-@]/.test(s) && !/^-?\d+(\.\d+)?$/.test(s)) s = "'" + s;
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function toCsv(header, rows) {
    return [header, ...rows].map((r) => r.map(csvCell).join(',')).join('\r\n') + '\r\n';
  }
  function download(name, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = document.createElement('a');
    a.href = url; a.download = name; a.hidden = true;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ---- charts: stacked bars in inline SVG ------------------------------------------------
  const SVGNS = 'http://www.w3.org/2000/svg';
  function el(name, attrs, text) {
    const e = document.createElementNS(SVGNS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  function shortNum(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toPrecision(3) + 'G';
    if (a >= 1e6) return (v / 1e6).toPrecision(3) + 'M';
    if (a >= 1e3) return (v / 1e3).toPrecision(3) + 'k';
    return String(Math.round(v * 1000) / 1000);
  }
  // Charts are drawn at their box's width: redraw them when the window is resized.
  const redraw = new Map(); // box id -> () => void
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { for (const f of redraw.values()) f(); }, 150);
  });
  function drawStacked(box, legend, buckets, keys, values, bucket, label, title) {
    redraw.set(box.id, () => drawStacked(box, legend, buckets, keys, values, bucket, label, title));
    // Drawn at the box's own width so that labels keep their size on a phone.
    const W = Math.max(300, Math.min(900, box.clientWidth || 900)), H = W < 600 ? 240 : 300;
    const L = 56, R = 10, T = 12, B = 40;
    const totals = buckets.map((b) => keys.reduce((s, k) => s + (values.get(k).get(b) || 0), 0));
    const max = niceMax(Math.max(0, ...totals));
    const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `Stacked ${label} per ${bucket} for ${title}; the table below has the numbers` });
    const plotW = W - L - R, plotH = H - T - B;
    for (let i = 0; i <= 4; i++) {
      const y = T + plotH - (plotH * i) / 4;
      svg.appendChild(el('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: '#e1e4e8' }));
      svg.appendChild(el('text', { x: L - 6, y: y + 4, 'text-anchor': 'end' }, shortNum((max * i) / 4)));
    }
    const bw = plotW / Math.max(1, buckets.length);
    const labelEvery = Math.max(1, Math.ceil(buckets.length / Math.max(3, Math.floor(W / 110))));
    buckets.forEach((b, i) => {
      let y = T + plotH;
      keys.forEach((k, ki) => {
        const v = values.get(k).get(b) || 0;
        if (v <= 0) return;
        const h = (v / max) * plotH;
        y -= h;
        const r = el('rect', { x: L + i * bw + bw * 0.1, y, width: Math.max(1, bw * 0.8), height: Math.max(0.5, h), fill: PALETTE[ki % PALETTE.length] });
        r.appendChild(el('title', {}, `${iso(b)} ${k}: ${shortNum(v)}`));
        svg.appendChild(r);
      });
      if (i % labelEvery === 0) {
        const d = iso(b), t = bucket === 'day' ? d.slice(5, 10) : d.slice(5, 10) + ' ' + d.slice(11, 13) + 'h';
        svg.appendChild(el('text', { x: L + i * bw + bw / 2, y: H - B + 16, 'text-anchor': 'middle' }, t));
      }
    });
    svg.appendChild(el('line', { x1: L, x2: W - R, y1: T + plotH, y2: T + plotH, stroke: '#57606a' }));
    svg.appendChild(el('text', { x: L, y: H - 6, 'text-anchor': 'start' }, label + ' per ' + bucket + ' (UTC)'));
    box.replaceChildren(svg);
    box.parentElement.hidden = !keys.length;
    legend.replaceChildren(...keys.map((k, ki) => {
      const s = document.createElement('span');
      s.className = 'sw' + (ki % PALETTE.length);
      s.textContent = k === '' ? '(none)' : k;
      return s;
    }));
  }
  function drawBars(box, labels, vals, title) {
    redraw.set(box.id, () => drawBars(box, labels, vals, title));
    const W = Math.max(300, Math.min(900, box.clientWidth || 900)), rowH = 22, L = W < 600 ? 120 : 200, R = 20;
    const H = Math.max(40, labels.length * rowH + 10);
    const max = niceMax(Math.max(0, ...vals));
    const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title + '; the table below has the numbers' });
    labels.forEach((lb, i) => {
      const y = 5 + i * rowH;
      const n = W < 600 ? 18 : 30;
      svg.appendChild(el('text', { x: L - 8, y: y + 14, 'text-anchor': 'end' }, lb.length > n ? lb.slice(0, n - 1) + '…' : lb));
      svg.appendChild(el('rect', { x: L, y: y + 3, width: Math.max(1, ((W - L - R) * vals[i]) / max), height: rowH - 6, fill: PALETTE[0] }));
    });
    box.replaceChildren(svg);
  }

  // ---- invoices ----------------------------------------------------------------------------
  let invCursor = null;
  async function loadInvoices(more) {
    const tenant = viewTenant();
    const msg = $('inv-msg'), tbody = $('inv-table').tBodies[0];
    $('inv-tenant').textContent = tenant ? '— ' + tenant : '';
    if (!tenant) { setMsg(msg, 'empty', 'Choose a tenant in the Finance view to see its invoices.'); tbody.replaceChildren(); return; }
    if (!more) { tbody.replaceChildren(); invCursor = null; }
    setMsg(msg, 'loading', 'Loading invoices…');
    let list;
    try {
      list = await api('/v1/tenants/' + encodeURIComponent(tenant) + '/invoices?limit=24' + (more && invCursor ? '&cursor=' + encodeURIComponent(invCursor) : ''));
    } catch (e) {
      setMsg(msg, 'error', explain(e, 'the invoices of ' + tenant));
      $('inv-more').hidden = true;
      return;
    }
    for (const inv of list.items) {
      const tr = tbody.insertRow();
      tr.dataset.invoiceId = inv.invoice_id;
      const cells = [inv.period, inv.status + (inv.live ? ' (live)' : ''), inv.number || '—', inv.total === null ? '—' : group3(inv.total), inv.currency || ''];
      cells.forEach((c, i) => { const td = tr.insertCell(); td.textContent = c; if (i === 3) { td.className = 'num'; td.dataset.value = inv.total || ''; } });
      const td = tr.insertCell();
      const base = 'invoice-' + inv.tenant + '-' + inv.period + '-' + (inv.number || inv.status);
      for (const [fmt, type] of [['JSON', 'application/json'], ['CSV', 'text/csv']]) {
        const b = document.createElement('button');
        b.type = 'button';
        b.textContent = fmt;
        b.setAttribute('aria-label', 'Download invoice ' + (inv.number || inv.period + ' draft') + ' as ' + fmt);
        b.addEventListener('click', async () => {
          b.disabled = true;
          try {
            const body = await api('/v1/invoices/' + encodeURIComponent(inv.invoice_id), type);
            download(base + '.' + fmt.toLowerCase(), type, typeof body === 'string' ? body : JSON.stringify(body, null, 2));
            setMsg(msg, '', 'Downloaded ' + base + '.' + fmt.toLowerCase() + '.');
          } catch (e) {
            setMsg(msg, 'error', explain(e, 'this invoice'));
          } finally { b.disabled = false; }
        });
        td.appendChild(b);
      }
    }
    invCursor = list.next_cursor;
    $('inv-more').hidden = !invCursor;
    if (!tbody.rows.length) setMsg(msg, 'empty', 'No invoices yet. A draft appears once usage is rated in a month.');
    else setMsg(msg, '', tbody.rows.length + ' invoices. Drafts are computed live and change until finalized.');
  }

  // ---- finance ---------------------------------------------------------------------------
  async function loadFinance() {
    const h = readHash();
    if (h.period && /^\d{4}-\d{2}$/.test(h.period)) $('fin-period').value = h.period;
    if (!$('fin-period').value) $('fin-period').value = monthName(nowMs());
    if (h.fgroup && [...$('fin-group').options].some((o) => o.value === h.fgroup)) $('fin-group').value = h.fgroup;
    const period = $('fin-period').value, group = $('fin-group').value, msg = $('fin-msg');
    setMsg(msg, 'loading', 'Loading revenue…');
    let data;
    try {
      data = await api('/v1/revenue?period=' + encodeURIComponent(period) + '&group_by=' + group);
    } catch (e) {
      setMsg(msg, 'error', explain(e, 'revenue'));
      renderTable($('fin-table'), [], [], [], null);
      $('fin-chart').replaceChildren();
      return;
    }
    const cols = data.group_by;
    const header = [...cols, 'currency', 'amount', 'amount_exact', 'dimension_events'];
    const rows = data.rows.map((r) => [...cols.map((c) => r[c]), r.currency, r.amount, r.amount_exact, r.dimension_events]);
    const numeric = header.map((hd) => ['amount', 'amount_exact', 'dimension_events'].includes(hd));
    // Totals per currency (exact decimal sums of the rows).
    const byCur = new Map();
    for (const r of data.rows) {
      if (!byCur.has(r.currency)) byCur.set(r.currency, { a: [], e: [], n: [] });
      const c = byCur.get(r.currency); c.a.push(r.amount); c.e.push(r.amount_exact); c.n.push(r.dimension_events);
    }
    renderTable($('fin-table'), header, rows, numeric, null);
    const tfoot = $('fin-table').tFoot;
    for (const [cur, c] of byCur) {
      const tr = tfoot.insertRow();
      tr.dataset.currency = cur;
      const cells = [...cols.map((_, i) => (i === 0 ? 'Total' : '')), cur, decSum(c.a), decSum(c.e), decSum(c.n)];
      cells.forEach((v, i) => { const td = tr.insertCell(); td.textContent = v; if (numeric[i]) td.className = 'num'; });
    }
    lastRevenue = { header, rows, name: 'revenue-' + period + '-' + group.replace(/,/g, '-') + '.csv' };
    const labels = data.rows.map((r) => cols.map((c) => r[c]).join(' / ') + ' (' + r.currency + ')');
    drawBars($('fin-chart'), labels, data.rows.map((r) => toPlot(r.amount)), 'Revenue ' + period + ' by ' + group);
    const sel = $('fin-tenant');
    if (cols.includes('tenant')) {
      const ts = [...new Set(data.rows.map((r) => r.tenant))].sort();
      sel.replaceChildren(...ts.map((t) => { const o = document.createElement('option'); o.value = o.textContent = t; return o; }));
    } else if (!sel.options.length) {
      api('/v1/revenue?period=' + encodeURIComponent(period) + '&group_by=tenant').then((d) => {
        sel.replaceChildren(...d.rows.map((r) => { const o = document.createElement('option'); o.value = o.textContent = r.tenant; return o; }));
      }).catch(() => {});
    }
    if (!data.rows.length) setMsg(msg, 'empty', 'No rated usage in ' + period + '. Choose another month.');
    else setMsg(msg, '', data.rows.length + ' rows: ' + data.basis + '.');
    await loadRevenueSeries(period);
    await loadEconomics(period);
  }

  // Revenue over time: the chosen month day by day, or the 12 months up to it.
  let lastRevenueSeries = null;
  async function loadRevenueSeries(period) {
    const bucket = $('fin-bucket').value, msg = $('fin-series-msg');
    const [y, m] = period.split('-').map(Number);
    const next = (yy, mm) => (mm === 12 ? [yy + 1, 1] : [yy, mm + 1]);
    const fmt = (yy, mm) => String(yy).padStart(4, '0') + '-' + String(mm).padStart(2, '0');
    let from, to;
    if (bucket === 'day') {
      from = period;
      to = fmt(...next(y, m));
    } else {
      const [ny, nm] = next(y, m);
      to = fmt(ny, nm);
      from = fmt(ny - 1, nm);
    }
    setMsg(msg, 'loading', 'Loading revenue over time…');
    let data;
    try {
      data = await api('/v1/revenue?from=' + from + '&to=' + to + '&bucket=' + bucket);
    } catch (e) {
      setMsg(msg, 'error', explain(e, 'revenue over time'));
      renderTable($('fin-series-table'), [], [], [], null);
      $('fin-series-chart').replaceChildren();
      return;
    }
    const header = ['bucket_start', 'currency', 'amount', 'amount_exact', 'dimension_events'];
    const rows = data.series.map((r) => [r.bucket_start.slice(0, bucket === 'day' ? 10 : 7), r.currency, r.amount, r.amount_exact, r.dimension_events]);
    const numeric = header.map((hd) => ['amount', 'amount_exact', 'dimension_events'].includes(hd));
    const curs = [...new Set(data.series.map((r) => r.currency))];
    const foot = curs.length === 1 ? ['Total', curs[0], decSum(rows.map((r) => r[2])), decSum(rows.map((r) => r[3])), decSum(rows.map((r) => r[4]))] : null;
    renderTable($('fin-series-table'), header, rows, numeric, foot);
    lastRevenueSeries = { header, rows, name: 'revenue-' + bucket + '-' + from + '-' + to + '.csv' };
    drawBars($('fin-series-chart'), rows.map((r) => r[0] + (curs.length > 1 ? ' (' + r[1] + ')' : '')), data.series.map((r) => toPlot(r.amount)),
      'Revenue by ' + bucket + ', ' + from + ' to ' + to + ' (exclusive)');
    if (!rows.length) setMsg(msg, 'empty', 'No rated usage from ' + from + ' to ' + to + '.');
    else setMsg(msg, '', rows.length + ' ' + bucket + (rows.length === 1 ? '' : 's') + ', ' + from + ' to ' + to + ' (exclusive).');
  }

  // Unit economics (/v1/economics): rows losing money first (the API's order), cost per 1M
  // output tokens beside the cost card's reference price.
  let lastEconomics = null;
  async function loadEconomics(period) {
    const basis = $('fin-econ-basis').value, group = $('fin-econ-group').value, msg = $('fin-econ-msg');
    setMsg(msg, 'loading', 'Loading unit economics…');
    let data;
    try {
      data = await api('/v1/economics?period=' + encodeURIComponent(period) + '&basis=' + basis + '&group_by=' + group);
    } catch (e) {
      setMsg(msg, 'error', explain(e, 'unit economics'));
      renderTable($('fin-econ-table'), [], [], [], null);
      $('fin-econ-chart').replaceChildren();
      return;
    }
    const cols = data.group_by;
    const vals = ['revenue_currency', 'revenue', 'cost_currency', 'gpu_cost', 'margin', 'output_tokens', 'gpu_us',
      'cost_per_1m_output_tokens', 'reference_per_1m_output_tokens', 'revenue_per_1m_output_tokens', 'hours_without_cost_card'];
    const header = [...cols, ...vals];
    const show = (v) => (v === null || v === undefined ? '' : v);
    const rows = data.rows.map((r) => [...cols.map((c) => r[c]), ...vals.map((v) => show(r[v]))]);
    const numeric = header.map((hd) => !cols.includes(hd) && !hd.endsWith('currency'));
    renderTable($('fin-econ-table'), header, rows, numeric, null);
    [...$('fin-econ-table').tBodies[0].rows].forEach((tr, i) => {
      const m = data.rows[i].margin;
      if (m !== null && m.startsWith('-')) tr.dataset.loss = 'true';
    });
    lastEconomics = { header, rows, name: 'economics-' + period + '-' + basis + '-' + group.replace(/,/g, '-') + '.csv' };
    const withCost = data.rows.filter((r) => r.cost_per_1m_output_tokens !== null);
    drawBars($('fin-econ-chart'),
      withCost.map((r) => cols.map((c) => r[c]).join(' / ') + (r.reference_per_1m_output_tokens !== null ? ' (ref ' + r.reference_per_1m_output_tokens + ')' : '')),
      withCost.map((r) => toPlot(r.cost_per_1m_output_tokens)), 'GPU cost per 1M output tokens ' + period + ' by ' + group);
    const losing = data.rows.filter((r) => r.margin !== null && r.margin.startsWith('-')).length;
    const uncosted = data.rows.filter((r) => r.hours_without_cost_card !== '0').length;
    if (!data.rows.length) setMsg(msg, 'empty', 'No usage or GPU windows in ' + period + '.');
    else setMsg(msg, '', data.rows.length + ' rows, ' + losing + ' losing money (listed first)' +
      (uncosted ? '; ' + uncosted + ' with hours that no cost card prices (no margin: add a cost card)' : '') + '.');
  }

  // ---- operator ----------------------------------------------------------------------------
  let opSeq = 0;
  async function loadOperator() {
    const seq = ++opSeq;
    loadIngest(seq);
    const msg = $('op-msg'), table = $('op-table');
    if (session.role !== 'admin') {
      renderTable(table, [], [], [], null);
      setMsg(msg, 'empty', 'The API\'s own request counters (/metrics) are shown to admin keys only.');
      return;
    }
    setMsg(msg, 'loading', 'Loading /metrics…');
    let text;
    try {
      text = await api('/metrics', 'text/plain');
    } catch (e) {
      renderTable(table, [], [], [], null);
      setMsg(msg, 'error', explain(e, '/metrics'));
      return;
    }
    const rows = [];
    for (const line of text.split('\n')) {
      // Route labels hold braces themselves ("GET /v1/tenants/{tenant}/usage").
      const m = /^(gridmeter_api_requests_total|gridmeter_api_errors_total)(\{.*\})?\s+(\S+)$/.exec(line);
      if (m && !(m[1] === 'gridmeter_api_errors_total' && m[3] === '0')) rows.push([m[1], m[2] || '', m[3]]);
    }
    renderTable(table, ['metric', 'labels', 'value'], rows, [false, false, true], null);
    setMsg(msg, '', 'The API\'s own request counters.');
  }
  // The rater's counters through GET /v1/ops/ingest; the rate from a second sample 3 s later.
  const msgTotal = (d) => Object.values(d.messages).reduce((a, x) => a + BigInt(x), 0n);
  async function loadIngest(seq) {
    const msg = $('ing-msg');
    setMsg(msg, 'loading', 'Loading the rater\'s metrics…');
    $('ing-rate').textContent = '';
    delete $('ing-rate').dataset.value;
    let d;
    try {
      d = await api('/v1/ops/ingest');
    } catch (e) {
      if (seq !== opSeq) return;
      renderTable($('ing-table'), [], [], [], null);
      renderTable($('lag-table'), [], [], [], null);
      setMsg(msg, 'error', explain(e, 'the rater\'s metrics'));
      return;
    }
    if (seq !== opSeq) return;
    const rows = Object.entries(d.messages).map(([k, v]) => ['messages ' + k, v]);
    rows.push(['batches committed', d.batches == null ? '' : d.batches]);
    rows.push(['commit time, seconds (sum)', d.commit_seconds.sum == null ? '' : d.commit_seconds.sum]);
    rows.push(['commits timed (count)', d.commit_seconds.count == null ? '' : d.commit_seconds.count]);
    renderTable($('ing-table'), ['counter', 'value'], rows, [false, true], null);
    renderTable($('lag-table'), ['topic', 'partition', 'lag (messages)'],
      d.consumer_lag.map((l) => [l.topic, String(l.partition), l.lag]), [false, true, true], null);
    setMsg(msg, '', 'From ' + d.source + ' at ' + d.fetched_at.slice(0, 19).replace('T', ' ') + ' UTC.');
    $('ing-rate').textContent = 'Ingest rate: measuring (a second sample in 3 s)…';
    await new Promise((res) => setTimeout(res, 3000));
    if (seq !== opSeq || readHash().view !== 'operator' || !session.key) return;
    let d2;
    try {
      d2 = await api('/v1/ops/ingest');
    } catch (e) {
      if (seq === opSeq) $('ing-rate').textContent = 'Ingest rate: unknown (' + explain(e, 'the second sample') + ')';
      return;
    }
    if (seq !== opSeq) return;
    const delta = msgTotal(d2) - msgTotal(d);
    const ms = Date.parse(d2.fetched_at) - Date.parse(d.fetched_at);
    // Display only (not money): messages per second with one decimal.
    const rate = ms > 0 ? (Number(delta) * 1000 / ms).toFixed(1) : '0.0';
    $('ing-rate').dataset.value = rate;
    $('ing-rate').dataset.delta = delta.toString();
    $('ing-rate').dataset.ms = String(ms);
    $('ing-rate').textContent = 'Ingest rate: ' + rate + ' messages/s (' + delta + ' messages in ' + (ms / 1000).toFixed(1) + ' s, all outcomes).';
  }

  // ---- wiring -------------------------------------------------------------------------------
  function onControl() {
    const range = $('range').value;
    $('from-l').hidden = $('to-l').hidden = range !== 'custom';
    if (range === 'custom' && !$('from').value) {
      const now = nowMs();
      $('from').value = iso(floorTo(now, DAY_MS) - 6 * DAY_MS).slice(0, 10);
      $('to').value = iso(now).slice(0, 10);
    }
    writeHash({ range, bucket: $('bucket').value, group: $('group').value, metric: $('metric').value,
      from: range === 'custom' ? $('from').value : null, to: range === 'custom' ? $('to').value : null });
    const tenant = viewTenant();
    if (tenant) loadSeries(tenant, ++usageSeq);
  }
  document.addEventListener('DOMContentLoaded', () => {
    $('signin-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = $('key').value.trim();
      if (!/^gmk_\S+$/.test(key)) { setMsg($('signin-msg'), 'error', 'Enter an API key: it starts with gmk_.'); $('key').focus(); return; }
      signIn(key);
    });
    $('signout').addEventListener('click', () => { forget(); history.replaceState(null, '', location.pathname); showSignin(''); });
    for (const id of ['range', 'bucket', 'group', 'metric', 'from', 'to']) $(id).addEventListener('change', onControl);
    $('csv-btn').addEventListener('click', () => {
      if (!lastSeries || !lastSeries.rows.length) { setMsg($('series-msg'), 'empty', 'Nothing to download: the table is empty.'); return; }
      download(lastSeries.name, 'text/csv', toCsv(lastSeries.header, lastSeries.rows));
    });
    $('fin-csv').addEventListener('click', () => {
      if (!lastRevenue || !lastRevenue.rows.length) { setMsg($('fin-msg'), 'empty', 'Nothing to download: the table is empty.'); return; }
      download(lastRevenue.name, 'text/csv', toCsv(lastRevenue.header, lastRevenue.rows));
    });
    $('fin-series-csv').addEventListener('click', () => {
      if (!lastRevenueSeries || !lastRevenueSeries.rows.length) { setMsg($('fin-series-msg'), 'empty', 'Nothing to download: the table is empty.'); return; }
      download(lastRevenueSeries.name, 'text/csv', toCsv(lastRevenueSeries.header, lastRevenueSeries.rows));
    });
    $('fin-bucket').addEventListener('change', () => loadRevenueSeries($('fin-period').value));
    $('fin-econ-csv').addEventListener('click', () => {
      if (!lastEconomics || !lastEconomics.rows.length) { setMsg($('fin-econ-msg'), 'empty', 'Nothing to download: the table is empty.'); return; }
      download(lastEconomics.name, 'text/csv', toCsv(lastEconomics.header, lastEconomics.rows));
    });
    for (const id of ['fin-econ-basis', 'fin-econ-group']) $(id).addEventListener('change', () => loadEconomics($('fin-period').value));
    $('fin-period').addEventListener('change', () => { writeHash({ period: $('fin-period').value }); loadFinance(); });
    $('fin-group').addEventListener('change', () => { writeHash({ fgroup: $('fin-group').value }); loadFinance(); });
    $('fin-open').addEventListener('click', () => { if ($('fin-tenant').value) { writeHash({ view: 'usage', tenant: $('fin-tenant').value }); route(); } });
    $('inv-more').addEventListener('click', () => loadInvoices(true));
    window.addEventListener('hashchange', route);
    for (const a of document.querySelectorAll('#tabs a')) {
      a.addEventListener('click', (ev) => { ev.preventDefault(); writeHash({ view: a.dataset.view }); route(); $('main').focus(); });
    }
    let key = null;
    try {
      key = sessionStorage.getItem(SS_KEY);
      if (key) {
        session.key = key;
        session.role = sessionStorage.getItem(SS_ROLE);
        session.tenant = sessionStorage.getItem(SS_TENANT);
      }
    } catch (e) { /* storage off */ }
    // a restored session asks /v1/me again for the server's clock (errors show in the views)
    if (key && session.role) identify().then(startApp, startApp); else showSignin('');
  });
})();
