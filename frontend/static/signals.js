/*
 * Longhaul outside the page: progress in the tab's title and icon, and a browser notification
 * when a download is ready (opt-in).
 *
 * - Title "(42%) Longhaul" while jobs run (the mean progress of the running ones), and the
 *   favicon a ring filled to that much, drawn on a canvas.
 * - "✓ Ready – Longhaul" and a check-mark icon when a job became ready while the tab was
 *   hidden; both go back once the tab is seen again.
 * - "Notify me when ready" (data-testid notify-toggle) asks for the Notification permission
 *   only when pressed and is remembered in localStorage; then a job that becomes ready while
 *   the tab is hidden shows a notification. Of several tabs only the one holding the event
 *   stream (live.js) notifies, and a tag per job keeps one notification per job regardless.
 *
 * Everything is read from the cards on the page after each swap; no state of its own but
 * which jobs it has seen in which state.
 */
(function () {
  'use strict';

  var NOTIFY_KEY = 'longhaul-notify';
  var ICON_SIZE = 64;
  var baseTitle = document.title;
  var baseIcon = null;
  var seenStates = new Map();
  var readyWhileHidden = false;
  var shownIcon = '';

  function iconLink() {
    return document.querySelector('link[rel="icon"]');
  }

  function ring(percent) {
    var canvas = document.createElement('canvas');
    canvas.width = canvas.height = ICON_SIZE;
    var ctx = canvas.getContext('2d');
    if (!ctx) return '';
    var middle = ICON_SIZE / 2;
    ctx.lineWidth = 10;
    ctx.strokeStyle = '#d0d7de';
    ctx.beginPath();
    ctx.arc(middle, middle, middle - 6, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.strokeStyle = '#1f5fbf';
    ctx.beginPath();
    ctx.arc(middle, middle, middle - 6, -Math.PI / 2, -Math.PI / 2 + 2 * Math.PI * percent / 100);
    ctx.stroke();
    return canvas.toDataURL('image/png');
  }

  function check() {
    var canvas = document.createElement('canvas');
    canvas.width = canvas.height = ICON_SIZE;
    var ctx = canvas.getContext('2d');
    if (!ctx) return '';
    ctx.fillStyle = '#1a7f37';
    ctx.beginPath();
    ctx.arc(ICON_SIZE / 2, ICON_SIZE / 2, ICON_SIZE / 2, 0, 2 * Math.PI);
    ctx.fill();
    ctx.strokeStyle = '#ffffff';
    ctx.lineWidth = 8;
    ctx.beginPath();
    ctx.moveTo(16, 33);
    ctx.lineTo(28, 45);
    ctx.lineTo(49, 21);
    ctx.stroke();
    return canvas.toDataURL('image/png');
  }

  function setIcon(href, kind) {
    var link = iconLink();
    if (!link || shownIcon === kind) return;
    if (baseIcon === null) baseIcon = { href: link.href, type: link.type };
    shownIcon = kind;
    link.type = kind === 'base' ? baseIcon.type : 'image/png';
    link.href = href || baseIcon.href;
    link.dataset.state = kind;
  }

  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll('[data-testid="job-card"]'));
  }

  function stateOf(card) {
    var el = card.querySelector('[data-testid="job-state"]');
    return el ? el.dataset.state : '';
  }

  function percentOf(card) {
    var bar = card.querySelector('[role="progressbar"]');
    return bar ? Number(bar.getAttribute('aria-valuenow')) || 0 : 0;
  }

  function scan() {
    var running = [];
    var ready = [];
    cards().forEach(function (card) {
      var id = card.dataset.jobId;
      var state = stateOf(card);
      var before = seenStates.get(id);
      seenStates.set(id, state);
      if (state === 'queued' || state === 'processing') running.push(percentOf(card));
      if (state === 'ready' && before !== undefined && before !== 'ready') ready.push(card);
    });
    if (ready.length && document.hidden) {
      readyWhileHidden = true;
      notify(ready);
    }
    show(running);
  }

  function show(running) {
    var title = baseTitle;
    if (readyWhileHidden) {
      title = '✓ Ready – ' + baseTitle;
      setIcon(check(), 'ready');
    } else if (running.length) {
      var mean = Math.round(running.reduce(function (a, b) { return a + b; }, 0) / running.length);
      title = '(' + mean + '%) ' + baseTitle;
      setIcon(ring(mean), 'progress-' + mean);
    } else {
      setIcon('', 'base');
    }
    if (document.title !== title) document.title = title;
  }

  /* ---- Notifications --------------------------------------------------------------- */

  function supported() {
    return typeof window.Notification === 'function';
  }

  function wanted() {
    try {
      return window.localStorage.getItem(NOTIFY_KEY) === '1';
    } catch (ignored) {
      return false;
    }
  }

  function remember(on) {
    try {
      window.localStorage.setItem(NOTIFY_KEY, on ? '1' : '0');
    } catch (ignored) { /* private mode: on for this page only */ }
  }

  function enabled() {
    return supported() && wanted() && Notification.permission === 'granted';
  }

  function notify(readyCards) {
    if (!enabled() || document.documentElement.dataset.liveRole === 'follower') return;
    readyCards.forEach(function (card) {
      var title = card.querySelector('[data-testid="job-title"]');
      var note = new Notification('Download ready', {
        body: (title ? title.textContent.trim() : 'Your archive') + ' is ready to download.',
        tag: 'longhaul-ready-' + card.dataset.jobId
      });
      note.onclick = function () {
        window.focus();
        note.close();
      };
    });
  }

  function syncToggle() {
    var button = document.querySelector('[data-testid="notify-toggle"]');
    if (!button) return;
    if (!supported()) {
      button.hidden = true;
      return;
    }
    button.hidden = false;
    var on = enabled();
    var blocked = Notification.permission === 'denied';
    button.setAttribute('aria-pressed', on ? 'true' : 'false');
    button.disabled = blocked;
    button.textContent = blocked ? 'Notifications blocked in this browser'
      : on ? 'Notifying you when ready' : 'Notify me when ready';
  }

  document.addEventListener('click', function (evt) {
    var button = evt.target.closest && evt.target.closest('[data-testid="notify-toggle"]');
    if (!button || !supported()) return;
    if (enabled()) {
      remember(false);
      syncToggle();
      return;
    }
    // Asked only here, on the person's click, as browsers require and people expect.
    Promise.resolve(Notification.requestPermission()).then(function (permission) {
      remember(permission === 'granted');
      syncToggle();
    });
  });

  /* ---- Wiring ---------------------------------------------------------------------- */

  document.addEventListener('visibilitychange', function () {
    if (document.hidden) return;
    readyWhileHidden = false;
    scan();
  });
  document.addEventListener('htmx:afterSettle', function () { scan(); syncToggle(); });
  document.addEventListener('htmx:sseMessage', scan);
  document.addEventListener('DOMContentLoaded', function () { scan(); syncToggle(); });
})();
