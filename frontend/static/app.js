/*
 * Longhaul pages: the little the server cannot do from HTML alone.
 *
 * - Live updates, the tab's title and notifications are in live.js and signals.js.
 * - Announces status changes once in the aria-live region (not every progress tick).
 * - Errors of actions in a notice: the form's own, next to its button, else the page's.
 *
 * No inline scripts or eval anywhere: the pages run under `script-src 'self'`.
 */
(function () {
  'use strict';

  var knownLabels = new Map();

  document.addEventListener('htmx:configRequest', function (evt) {
    var csrf = document.querySelector('meta[name="csrf-token"]');
    if (csrf) evt.detail.headers['X-CSRFToken'] = csrf.content;
  });

  // One key per intended download: a double click (or a retried request) carries the same
  // key, so the server makes one job. A new key is drawn once a request has gone through.
  function renewIdempotencyKey() {
    var field = document.querySelector('#catalogue-form input[name="idempotency_key"]');
    if (!field) return;
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    field.value = Array.prototype.map.call(bytes, function (b) {
      return ('0' + b.toString(16)).slice(-2);
    }).join('');
  }
  document.addEventListener('DOMContentLoaded', renewIdempotencyKey);

  /* ---- Announcements --------------------------------------------------------------- */

  function announceChanges(initial) {
    var messages = [];
    document.querySelectorAll('[data-testid="job-card"]').forEach(function (card) {
      var stateEl = card.querySelector('[data-testid="job-state"]');
      if (!stateEl) return;
      var id = card.dataset.jobId;
      var label = stateEl.textContent.trim();
      var previous = knownLabels.get(id);
      knownLabels.set(id, label);
      // Cards brought by "Show older" are history, not news (cards.js says how many came).
      if (initial || previous === label || (previous === undefined && card.hasAttribute('data-older'))) return;
      var titleEl = card.querySelector('[data-testid="job-title"]');
      var title = titleEl ? titleEl.textContent.trim() : 'Download';
      var message = previous === undefined ? 'Download added: ' + title + '. ' + label : title + ': ' + label;
      var errorEl = card.querySelector('[data-testid="job-error"]');
      if (errorEl && stateEl.dataset.state === 'failed') message += '. ' + errorEl.textContent.trim();
      messages.push(message);
    });
    if (messages.length) announce(messages.join('. '));
  }

  function announce(text) {
    var region = document.getElementById('announcer');
    if (!region) return;
    // Emptying first makes screen readers repeat a message identical to the last one.
    region.textContent = '';
    setTimeout(function () { region.textContent = text; }, 60);
  }

  /* ---- Notices (errors of the person's own actions) -------------------------------- */

  function isUserAction(elt) {
    return !!(elt && elt.matches && elt.matches('form, button, a'));
  }

  // A form's own notice (next to its button) if it has one, else the page's at the top.
  function showNotice(text, elt) {
    var form = elt && elt.closest ? elt.closest('form') : null;
    var notice = (form && form.querySelector('[data-form-notice]')) || document.getElementById('notice');
    if (!notice) return;
    notice.textContent = text;
    notice.hidden = !text;
  }

  function errorText(xhr) {
    try {
      var detail = JSON.parse(xhr.responseText).detail;
      if (typeof detail === 'string' && detail) {
        // "file_ids: select at least one file" reads better without the field name; the
        // archive name's field is named as the form labels it.
        detail = detail.replace(/^name: /, 'Archive name ').replace(/^[a-z_]+: /, '');
        return detail.charAt(0).toUpperCase() + detail.slice(1) + '.';
      }
    } catch (ignored) { /* not JSON */ }
    return 'Something went wrong (HTTP ' + xhr.status + '). Please try again.';
  }

  document.addEventListener('htmx:responseError', function (evt) {
    if (isUserAction(evt.detail.elt)) showNotice(errorText(evt.detail.xhr), evt.detail.elt);
  });
  document.addEventListener('htmx:sendError', function (evt) {
    if (isUserAction(evt.detail.elt)) {
      showNotice('The server could not be reached. Check your connection and try again.', evt.detail.elt);
    }
  });
  document.addEventListener('htmx:afterRequest', function (evt) {
    var elt = evt.detail.elt;
    if (!evt.detail.successful || !isUserAction(elt)) return;
    showNotice('', elt);
    if (elt.id === 'catalogue-form') {
      elt.reset();
      renewIdempotencyKey();
      revealNewestJob();
    }
  });

  // On a phone the panel sits below the catalogue: bring the new card into view.
  function revealNewestJob() {
    if (!window.matchMedia('(max-width: 959px)').matches) return;
    var card = document.querySelector('[data-testid="job-card"]');
    if (!card) return;
    var still = window.matchMedia('(prefers-reduced-motion: reduce)').matches;
    card.scrollIntoView({ behavior: still ? 'auto' : 'smooth', block: 'center' });
  }

  /* ---- Focus ---------------------------------------------------------------------- */

  // A button disabled during its request loses focus; give it back to the action that
  // takes its place on the card (same id), so keyboard users stay where they were.
  var focusAfterSwap = null;
  document.addEventListener('htmx:beforeRequest', function (evt) {
    var elt = evt.detail.elt;
    if (elt && elt.id && elt === document.activeElement && isUserAction(elt)) focusAfterSwap = elt.id;
  });
  document.addEventListener('htmx:afterSettle', function () {
    if (!focusAfterSwap) return;
    var active = document.activeElement;
    var target = document.getElementById(focusAfterSwap);
    focusAfterSwap = null;
    if (target && (!active || active === document.body || !document.body.contains(active))) {
      target.focus();
    }
  });

  /* Catalogue selection (kept across pages, shift-click ranges, the limit): catalogue.js. */

  /* ---- Local times ----------------------------------------------------------------- */

  function localizeTimes(root) {
    (root || document).querySelectorAll('time[data-local-time]').forEach(function (el) {
      var when = new Date(el.dateTime);
      if (isNaN(when.getTime())) return;
      var time = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      // Today's times alone; any other day with its full date.
      el.textContent = when.toDateString() === new Date().toDateString()
        ? time
        : when.toLocaleDateString([], { day: 'numeric', month: 'short', year: 'numeric' }) + ', ' + time;
    });
  }

  /* ---- Wiring ---------------------------------------------------------------------- */

  document.addEventListener('htmx:load', function (evt) {
    localizeTimes(evt.detail.elt);
  });
  document.addEventListener('htmx:afterSettle', function () {
    announceChanges(false);
  });
  document.addEventListener('htmx:sseMessage', function () {
    announceChanges(false);
  });
  document.addEventListener('DOMContentLoaded', function () {
    announceChanges(true);
    localizeTimes(document);
  });
})();
