// Sentinel's dashboard: the live parts. Plain JavaScript, no dependencies, served by the
// daemon itself. Every page works without it; it only adds what changes while you look.
//
// - The live feed (#feed) and the overview's incident list (#incidents, first page without
//   filters) follow /ui/events with EventSource from the event the page was rendered at
//   (data-after). EventSource reconnects by itself and sends Last-Event-ID, so a dropped
//   connection misses nothing.
// - The overview's ingest table (#ingest) is refreshed from /ui/stats.json every 2 s.
//
// Log text is attacker-controlled: rows are built with textContent, never innerHTML.
(function () {
  'use strict';

  function el(tag, className, text) {
    var e = document.createElement(tag);
    if (className) { e.className = className; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function time(s) {
    if (!s) { return ''; }
    return String(s).replace('T', ' ').replace(/\.\d+/, '').replace(/Z$/, 'Z');
  }

  function short(s, n) {
    s = s ? String(s) : '';
    return s.length <= n ? s : s.slice(0, n) + '\u2026';
  }

  function link(href, text) {
    var a = el('a', null, text);
    a.setAttribute('href', href);
    return a;
  }

  function badge(prefix, name) {
    return el('span', 'badge ' + prefix + name, name);
  }

  var feed = document.getElementById('feed');
  var list = document.getElementById('incidents');
  var liveList = list && list.getAttribute('data-live') === '1';
  var status = document.getElementById('live-status');

  function detail(e) {
    var d = e.data || {};
    var keys = ['sample', 'error', 'reason', 'status'];
    for (var i = 0; i < keys.length; i++) {
      if (typeof d[keys[i]] === 'string' && d[keys[i]] !== '') { return d[keys[i]]; }
    }
    return '';
  }

  function addFeedRow(e) {
    var body = feed.tBodies[0];
    if (body.querySelector('tr[data-seq="' + e.seq + '"]')) { return; }
    var tr = el('tr');
    tr.setAttribute('data-seq', e.seq);
    tr.appendChild(el('td', null, e.seq));
    tr.appendChild(el('td', 'time', time(e.at)));
    var kind = el('td');
    kind.appendChild(badge('ev-', e.kind));
    tr.appendChild(kind);
    var inc = el('td');
    if (e.incident_id) { inc.appendChild(link('/ui/incidents/' + encodeURIComponent(e.incident_id), e.incident_id)); }
    tr.appendChild(inc);
    tr.appendChild(el('td', null, e.component_id));
    tr.appendChild(el('td', 'sample', short(detail(e), 120)));
    body.insertBefore(tr, body.firstChild);
    var keep = parseInt(feed.getAttribute('data-keep'), 10) || 200;
    while (body.rows.length > keep) { body.deleteRow(body.rows.length - 1); }
  }

  function addIncidentRow(inc) {
    var body = list.tBodies[0];
    var old = body.querySelector('tr[data-id="' + inc.id + '"]');
    if (old) { body.removeChild(old); }
    var tr = el('tr', 'fresh');
    tr.setAttribute('data-id', inc.id);
    var first = el('td', 'incident');
    first.appendChild(link('/ui/incidents/' + encodeURIComponent(inc.id), inc.id));
    first.appendChild(el('div', 'sample', short(inc.sample, 160)));
    tr.appendChild(first);
    tr.appendChild(el('td', null, inc.component_id));
    var sev = el('td');
    sev.appendChild(badge('sev-', inc.severity));
    tr.appendChild(sev);
    var st = el('td');
    st.appendChild(badge('st-', inc.status));
    st.appendChild(document.createTextNode(' '));
    st.appendChild(el('span', 'badge flag-new', 'new'));
    tr.appendChild(st);
    var w = el('td', 'num', inc.count);
    w.setAttribute('data-field', 'window');
    tr.appendChild(w);
    var c = el('td', 'num', inc.count);
    c.setAttribute('data-field', 'count');
    tr.appendChild(c);
    tr.appendChild(el('td'));
    tr.appendChild(el('td', 'time', time(inc.first_seen)));
    var last = el('td', 'time', time(inc.last_seen));
    last.setAttribute('data-field', 'last_seen');
    tr.appendChild(last);
    body.insertBefore(tr, body.firstChild);
    var empty = document.getElementById('empty');
    if (empty) { empty.parentNode.removeChild(empty); }
  }

  function updateIncidentRow(inc) {
    var tr = list.tBodies[0].querySelector('tr[data-id="' + inc.id + '"]');
    if (!tr) { return; }
    var c = tr.querySelector('[data-field="count"]');
    if (c) { c.textContent = String(inc.count); }
    var last = tr.querySelector('[data-field="last_seen"]');
    if (last) { last.textContent = time(inc.last_seen); }
  }

  // The list's filters, as the server applied them (status, component, severity, text).
  function filter(name) { return (list && list.getAttribute('data-filter-' + name)) || ''; }
  function matchesFilters(inc) {
    var st = filter('status');
    if (st === 'active') {
      if (inc.status === 'resolved' || inc.status === 'escalated') { return false; }
    } else if (st && inc.status !== st) { return false; }
    var comp = filter('component');
    if (comp && inc.component_id !== comp) { return false; }
    var sev = filter('severity');
    if (sev && inc.severity !== sev) { return false; }
    var q = filter('q').toLowerCase();
    if (q) {
      var fields = [inc.sample, inc.normalized, inc.component_id, inc.pact_key, inc.id];
      var hit = false;
      for (var i = 0; i < fields.length; i++) {
        if (typeof fields[i] === 'string' && fields[i].toLowerCase().indexOf(q) >= 0) { hit = true; }
      }
      if (!hit) { return false; }
    }
    return true;
  }

  function onEvent(msg) {
    var e;
    try { e = JSON.parse(msg.data); } catch (err) { return; }
    if (feed) { addFeedRow(e); }
    if (list && e.data && e.data.id) {
      // Rows on any page and in any order follow their incident; new incidents join the
      // first page of the recency order when they match its filters.
      if (e.kind === 'incident_detected') {
        if (liveList && matchesFilters(e.data)) { addIncidentRow(e.data); }
      } else { updateIncidentRow(e.data); }
    }
  }

  if (feed || list) {
    var after = (feed && feed.getAttribute('data-after')) || document.body.getAttribute('data-after') || '';
    var source = new EventSource('/ui/events' + (after ? '?after=' + encodeURIComponent(after) : ''));
    var kinds = (document.body.getAttribute('data-kinds') || '').split(',');
    for (var i = 0; i < kinds.length; i++) {
      if (kinds[i]) { source.addEventListener(kinds[i], onEvent); }
    }
    source.addEventListener('gap', function () {
      if (feed) {
        var body = feed.tBodies[0];
        var tr = el('tr', 'gap');
        var td = el('td', null, 'older events were pruned from the log before they could be shown');
        td.setAttribute('colspan', '6');
        tr.appendChild(td);
        body.insertBefore(tr, body.firstChild);
      }
    });
    source.onopen = function () { if (status) { status.textContent = 'live'; status.className = 'ok'; } };
    source.onerror = function () { if (status) { status.textContent = 'reconnecting\u2026'; status.className = 'muted'; } };
  }

  var ingest = document.getElementById('ingest');
  if (ingest) {
    var fields = ['lines_per_s', 'bytes_per_s', 'error_lines_per_s', 'webhook_requests_per_s', 'rejected_429_per_s', 'error_lines', 'lag_bytes', 'files_behind'];
    var counts = { error_lines: true, lag_bytes: true, files_behind: true };
    var refresh = function () {
      fetch('/ui/stats.json', { credentials: 'same-origin' }).then(function (r) {
        return r.ok ? r.json() : null;
      }).then(function (s) {
        if (!s) { return; }
        s.sources.forEach(function (src) {
          var rows = ingest.tBodies[0].rows;
          for (var i = 0; i < rows.length; i++) {
            if (rows[i].getAttribute('data-source') !== src.name) { continue; }
            fields.forEach(function (f) {
              var td = rows[i].querySelector('[data-field="' + f + '"]');
              if (!td) { return; }
              var v = src[f];
              if (v === null || v === undefined) { td.textContent = '\u2013'; return; }
              td.textContent = counts[f] ? String(v) : (f === 'bytes_per_s' ? v.toFixed(0) : v.toFixed(1));
            });
          }
        });
        var q = document.getElementById('lag-queue');
        if (q) { q.textContent = String(s.queue_depth); }
        var u = document.getElementById('lag-unapplied');
        if (u) { u.textContent = String(s.unapplied_events); }
        var behind = document.getElementById('behind');
        if (behind && s.most_behind) {
          // Paths are attacker-influenced text: cells are filled with textContent only.
          var body = behind.tBodies[0];
          while (body.firstChild) { body.removeChild(body.firstChild); }
          s.most_behind.forEach(function (b) {
            var tr = document.createElement('tr');
            [b.path, b.source, String(b.bytes_behind), b.behind_seconds + ' s'].forEach(function (text, i) {
              var td = document.createElement('td');
              if (i === 0) { td.className = 'mono'; }
              td.textContent = text;
              tr.appendChild(td);
            });
            body.appendChild(tr);
          });
          var none = document.getElementById('behind-none');
          if (none) { none.hidden = s.most_behind.length > 0; }
          var det = document.getElementById('behind-files');
          if (det && s.most_behind.length > 0) { det.open = true; }
        }
      }).catch(function () {});
    };
    setInterval(refresh, 2000);
  }
}());
