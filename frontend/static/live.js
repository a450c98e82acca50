/*
 * Longhaul live updates: one event stream per browser, shared by all of its tabs.
 *
 * Browsers allow six HTTP/1.1 connections per origin; tabs that each held a stream starved
 * the seventh tab and every download. So one tab, the leader, holds the stream
 * (`/events?scope=browser`: every job of this browser, new ones included, and a `ping`
 * heartbeat) and passes each event to the other tabs over a BroadcastChannel. The leader is
 * whichever tab holds the Web Lock `longhaul-live`; when it closes, the browser hands the
 * lock to a waiting tab, which opens the stream itself. Without Web Locks or
 * BroadcastChannel every tab is its own leader (one stream per tab, as before).
 *
 * Every tab applies every event the same way: `job-<id>` swaps the live part of that card,
 * `job-new` puts a card started elsewhere on top, `ping` only says the stream is alive.
 *
 * When the stream fails (an error, or no event within 3 s of opening: a proxy that buffers
 * it), all tabs fall back to polling (the server renders cards that poll every 2 s) and the
 * leader tries the stream again after 5, 10, 30, then every 60 s; the first event brings all
 * tabs back to the stream. While updates are late (no event for longer than the server's
 * ping interval plus a margin, or a stream that failed and nothing since) the panel says
 * "Reconnecting…" (role=status), hides remaining-time estimates, and once updates flow again
 * clears it and any notice an action got while the server could not be reached.
 *
 * `html[data-live-mode]` says `sse` or `poll`, `html[data-live-role]` `leader` or `follower`.
 * Each swap fires `htmx:sseMessage` on the swapped element, as the htmx sse extension did,
 * so listeners (app.js announcements) need not care who applied it.
 */
(function () {
  'use strict';

  var LOCK_NAME = 'longhaul-live';
  var CHANNEL_NAME = 'longhaul-live';
  var STREAM_URL = '/events?scope=browser';
  var FIRST_EVENT_MS = 3000;
  var RETRY_STEPS_MS = [5000, 10000, 30000, 60000];
  var PANEL_RETRY_MS = 2000;
  var POLL_MS = 2000;
  var CHECK_MS = 1000;
  var DEFAULT_PING_MS = 15000;

  // Only the downloads page has jobs to follow (not /ops, not an error page). Deferred
  // scripts run once the document is parsed, so the panel is there if the page has one.
  if (!document.getElementById('downloads')) return;

  var root = document.documentElement;
  var shared = !!(navigator.locks && navigator.locks.request) && typeof BroadcastChannel === 'function';
  var channel = shared ? new BroadcastChannel(CHANNEL_NAME) : null;
  var leader = false;
  var mode = 'sse';
  var source = null;
  var listening = {};
  var firstTimer = null;
  var retryTimer = null;
  var retries = 0;
  var lastLiveAt = Date.now();
  var broken = false;
  var reconnecting = false;
  var outageNotice = '';

  root.dataset.liveMode = mode;
  root.dataset.liveRole = 'follower';

  function panel() {
    return document.getElementById('downloads');
  }

  function pingMs() {
    var current = panel();
    return (current && Number(current.dataset.pingMs)) || DEFAULT_PING_MS;
  }

  /* ---- Applying events (every tab) ------------------------------------------------- */

  function apply(name, data) {
    markLive();
    if (name === 'ping') return;
    if (name === 'job-new') {
      insertCard(data);
      return;
    }
    var target = document.querySelector('[data-live-event="' + name + '"]');
    // A card this tab does not show, or one that polls: nothing to do.
    if (!target) return;
    htmx.swap(target, data, { swapStyle: 'innerHTML', swapDelay: 0, settleDelay: 0 });
    target.dispatchEvent(new CustomEvent('htmx:sseMessage', {
      bubbles: true,
      detail: { type: name, data: data }
    }));
  }

  function insertCard(html) {
    var template = document.createElement('template');
    template.innerHTML = html.trim();
    var card = template.content.firstElementChild;
    var current = panel();
    if (!card || !card.id || !current) return;
    if (document.getElementById(card.id)) {
      // This tab started it (its card came with the answer), and it may have moved on since.
      refreshCard(card);
      return;
    }
    if (mode === 'poll') {
      // The card came rendered for the stream; the panel renders it for polling instead.
      reloadPanel();
      return;
    }
    var list = current.querySelector('[data-testid="job-list"]');
    if (!list) {
      list = document.createElement('ol');
      list.className = 'jobs';
      list.setAttribute('data-testid', 'job-list');
      var empty = current.querySelector('[data-testid="jobs-empty"]');
      if (empty) empty.replaceWith(list); else current.appendChild(list);
    }
    htmx.swap(list, html, { swapStyle: 'afterbegin', swapDelay: 0, settleDelay: 0 });
    // The panel shows the newest jobs only, as the server renders it; unless the person has
    // opened older ones ("Show older", cards.js), which stay while they read them.
    var shown = list.querySelectorAll('[data-testid="job-card"]');
    var limit = Number(current.dataset.panelJobs) || shown.length;
    if (!list.querySelector('[data-older]')) {
      for (var i = limit; i < shown.length; i += 1) shown[i].remove();
    }
    if (leader) listenForCards();
  }

  function refreshCard(card) {
    var fresh = card.querySelector('[data-testid="job-live"]');
    var target = document.getElementById(fresh ? fresh.id : '');
    if (!fresh || !target || !target.hasAttribute('data-live-event')) return;
    if (!fresh.hasAttribute('data-live-event')) target.removeAttribute('data-live-event');
    htmx.swap(target, fresh.innerHTML, { swapStyle: 'innerHTML', swapDelay: 0, settleDelay: 0 });
    target.dispatchEvent(new CustomEvent('htmx:sseMessage', {
      bubbles: true,
      detail: { type: 'job-new', data: fresh.innerHTML }
    }));
  }

  /* ---- The stream (leader only) ---------------------------------------------------- */

  function share(message) {
    if (channel) channel.postMessage(message);
  }

  function onStreamEvent(evt) {
    clearTimeout(firstTimer);
    retries = 0;
    if (mode !== 'sse') {
      setMode('sse', 'the event stream works again');
      share({ type: 'state', mode: mode, broken: false });
    }
    apply(evt.type, evt.data);
    share({ type: 'event', name: evt.type, data: evt.data });
  }

  // EventSource hands named events only to listeners of that name: one per job on the page.
  function listenForCards() {
    if (!source) return;
    document.querySelectorAll('[data-testid="job-card"][data-job-id]').forEach(function (card) {
      var name = 'job-' + card.dataset.jobId;
      if (listening[name]) return;
      listening[name] = true;
      source.addEventListener(name, onStreamEvent);
    });
  }

  function openStream() {
    closeStream();
    clearTimeout(retryTimer);
    source = new EventSource(STREAM_URL);
    listening = {};
    source.addEventListener('ping', onStreamEvent);
    source.addEventListener('job-new', onStreamEvent);
    source.onerror = function () { streamFailed('event stream error'); };
    listenForCards();
    firstTimer = setTimeout(function () {
      streamFailed('no event within ' + FIRST_EVENT_MS + ' ms');
    }, FIRST_EVENT_MS);
  }

  function closeStream() {
    clearTimeout(firstTimer);
    if (source) source.close();
    source = null;
  }

  function streamFailed(reason) {
    closeStream();
    broken = true;
    setMode('poll', reason);
    share({ type: 'state', mode: mode, broken: true });
    var wait = RETRY_STEPS_MS[Math.min(retries, RETRY_STEPS_MS.length - 1)];
    retries += 1;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(openStream, wait);
    checkLate();
  }

  function becomeLeader() {
    leader = true;
    root.dataset.liveRole = 'leader';
    openStream();
  }

  if (shared) {
    channel.onmessage = function (evt) {
      var message = evt.data || {};
      if (leader) return;
      if (message.type === 'event') {
        apply(message.name, message.data);
      } else if (message.type === 'state') {
        if (message.broken !== broken) {
          broken = !!message.broken;
          if (!broken) lastLiveAt = Date.now();
          checkLate();
        }
        setMode(message.mode, 'as the tab holding the stream');
      }
    };
    // Held for the tab's life (the promise never settles); the browser frees it on close.
    navigator.locks.request(LOCK_NAME, function () {
      becomeLeader();
      return new Promise(function () {});
    });
  } else {
    becomeLeader();
  }

  /* ---- SSE or polling -------------------------------------------------------------- */

  function setMode(next, reason) {
    if (!next || mode === next) return;
    mode = next;
    root.dataset.liveMode = next;
    if (window.console) console.info('Longhaul: live updates by ' + (next === 'sse' ? 'the event stream' : 'polling') + ' (' + reason + ')');
    reloadPanel();
  }

  // Re-render the panel for the current mode (cards that listen, or cards that poll).
  function reloadPanel() {
    var current = panel();
    if (!current) return;
    var check = function () {
      var now = panel();
      if (now && now.dataset.liveMode !== mode) setTimeout(reloadPanel, PANEL_RETRY_MS);
    };
    htmx.ajax('GET', '/downloads', { source: current, target: current, swap: 'outerHTML' })
      .then(check, check);
  }

  document.addEventListener('htmx:configRequest', function (evt) {
    evt.detail.headers['X-Live-Mode'] = mode;
  });

  /* ---- Late updates ---------------------------------------------------------------- */

  function markLive() {
    lastLiveAt = Date.now();
    broken = false;
    checkLate();
  }

  function hasPollingCards() {
    return !!document.querySelector('[data-testid="job-live"][hx-get]');
  }

  function checkLate() {
    var late;
    if (broken) {
      late = true;
    } else if (mode === 'sse') {
      late = Date.now() - lastLiveAt > pingMs() + Math.max(3000, pingMs() / 2);
    } else {
      late = hasPollingCards() && Date.now() - lastLiveAt > 2 * POLL_MS + 3000;
    }
    // A stream that went quiet (a proxy holding it, a server that hung) counts as failed.
    if (late && !broken && leader && source && mode === 'sse') {
      streamFailed('no event for ' + Math.round((Date.now() - lastLiveAt) / 1000) + ' s');
      return;
    }
    if (late !== reconnecting) {
      reconnecting = late;
      if (!late) clearOutageNotice();
    }
    showStatus();
  }

  function showStatus() {
    if (reconnecting) root.dataset.liveLate = ''; else delete root.dataset.liveLate;
    var status = document.querySelector('[data-testid="live-status"]');
    if (!status) return;
    var text = reconnecting ? 'Reconnecting… Updates are paused; progress shown may be out of date.' : '';
    if (status.textContent !== text) status.textContent = text;
  }

  // A notice from an action the server never received is stale once it can be reached again.
  function noteOutageNotice() {
    setTimeout(function () {
      var notice = document.getElementById('notice');
      outageNotice = notice && !notice.hidden ? notice.textContent : '';
    }, 0);
  }

  function clearOutageNotice() {
    var notice = document.getElementById('notice');
    if (notice && outageNotice && !notice.hidden && notice.textContent === outageNotice) {
      notice.textContent = '';
      notice.hidden = true;
    }
    outageNotice = '';
  }

  document.addEventListener('htmx:sendError', noteOutageNotice);
  document.addEventListener('htmx:responseError', function (evt) {
    // A gateway's answer while the API is down (502, 503, 504) is part of the outage.
    if (evt.detail.xhr && evt.detail.xhr.status >= 502) noteOutageNotice();
  });
  document.addEventListener('htmx:afterRequest', function (evt) {
    var config = evt.detail.requestConfig;
    if (evt.detail.successful && config && config.verb === 'get' && mode === 'poll') markLive();
  });
  document.addEventListener('htmx:afterSwap', function () {
    showStatus();
    if (leader) listenForCards();
  });
  setInterval(function () {
    checkLate();
    if (leader) share({ type: 'state', mode: mode, broken: broken });
  }, CHECK_MS);

  // A page restored from the back/forward cache shows old cards and has no stream.
  window.addEventListener('pageshow', function (evt) {
    if (!evt.persisted) return;
    reloadPanel();
    if (leader) openStream();
  });
})();
