/*
 * Longhaul job cards: where keyboard focus goes after an action, the inline "Cancel download?"
 * step, "Show older" and "Clear finished". Live updates and announcements of status changes
 * are app.js's; this file only moves focus and says what an action did.
 *
 * - After **Download selected** focus moves to the new card's heading (tabindex -1), so it
 *   does not fall to <body> when the form's button is disabled during its request.
 * - A job running longer than a few seconds renders its Cancel button with
 *   `data-confirm-cancel`: pressing it opens the card's confirm group (outside the live part,
 *   so progress updates cannot close it) with focus on "Keep downloading"; Escape keeps.
 * - "Show older" moves focus to the first card it brought and says how many; "Clear
 *   finished" moves focus to the panel's heading and reads out what it removed.
 */
(function () {
  'use strict';

  var cardsBefore = null;
  var focusAfterCancel = null;
  var olderBefore = null;
  var clearing = false;

  function cardIds() {
    return Array.prototype.map.call(
      document.querySelectorAll('[data-testid="job-card"]'),
      function (card) { return card.dataset.jobId; }
    );
  }

  function say(text) {
    var region = document.getElementById('announcer');
    if (!region || !text) return;
    region.textContent = '';
    setTimeout(function () { region.textContent = text; }, 120);
  }

  function focusTitle(card) {
    var title = card && card.querySelector('[data-testid="job-title"]');
    if (title) title.focus();
  }

  function focusLost() {
    var active = document.activeElement;
    return !active || active === document.body || !document.body.contains(active);
  }

  /* ---- Cancel download? ----------------------------------------------------------- */

  function confirmGroup(card) {
    return card ? card.querySelector('[data-testid="cancel-confirm"]') : null;
  }

  function openConfirm(card) {
    var group = confirmGroup(card);
    if (!group) return;
    group.hidden = false;
    card.classList.add('job-confirming');
    group.querySelector('[data-cancel-keep]').focus();
  }

  function closeConfirm(card, refocus) {
    var group = confirmGroup(card);
    if (!group || group.hidden) return;
    var hadFocus = group.contains(document.activeElement);
    group.hidden = true;
    card.classList.remove('job-confirming');
    var action = document.getElementById('job-action-' + card.dataset.jobId);
    if ((refocus || hadFocus) && action) action.focus();
  }

  // A job that ended while its confirm group was open has nothing left to cancel.
  function closeStaleConfirms() {
    document.querySelectorAll('.job-confirming').forEach(function (card) {
      if (!card.querySelector('[data-testid="job-live"] [data-testid="cancel-button"]')) {
        closeConfirm(card, false);
      }
    });
  }

  document.addEventListener('click', function (evt) {
    var target = evt.target.closest ? evt.target.closest('[data-confirm-cancel], [data-cancel-keep]') : null;
    if (!target) return;
    var card = target.closest('[data-testid="job-card"]');
    if (target.hasAttribute('data-confirm-cancel')) openConfirm(card);
    else closeConfirm(card, true);
  });

  document.addEventListener('keydown', function (evt) {
    if (evt.key !== 'Escape') return;
    var group = evt.target.closest ? evt.target.closest('[data-testid="cancel-confirm"]') : null;
    if (group) closeConfirm(group.closest('[data-testid="job-card"]'), true);
  });

  /* ---- Requests: remember what to focus once the answer is in ---------------------- */

  document.addEventListener('htmx:beforeRequest', function (evt) {
    var elt = evt.detail.elt;
    if (!elt) return;
    if (elt.id === 'catalogue-form') cardsBefore = cardIds();
    var testid = elt.dataset ? elt.dataset.testid : '';
    if (testid === 'cancel-yes') focusAfterCancel = elt.closest('[data-testid="job-card"]').dataset.jobId;
    if (testid === 'show-older') olderBefore = cardIds();
    if (testid === 'clear-finished') clearing = true;
  });

  document.addEventListener('htmx:afterSettle', function () {
    closeStaleConfirms();
    if (cardsBefore) {
      var known = cardsBefore;
      cardsBefore = null;
      var fresh = Array.prototype.find.call(
        document.querySelectorAll('[data-testid="job-card"]'),
        function (card) { return known.indexOf(card.dataset.jobId) === -1; }
      );
      if (fresh) focusTitle(fresh);
    }
    if (focusAfterCancel) {
      var action = document.getElementById('job-action-' + focusAfterCancel);
      focusAfterCancel = null;
      if (action && focusLost()) action.focus();
    }
    if (olderBefore) {
      var shown = olderBefore;
      olderBefore = null;
      var added = Array.prototype.filter.call(
        document.querySelectorAll('[data-testid="job-card"]'),
        function (card) { return shown.indexOf(card.dataset.jobId) === -1; }
      );
      if (added.length) {
        focusTitle(added[0]);
        say(added.length + (added.length === 1 ? ' older download' : ' older downloads') + ' shown.');
      } else if (focusLost()) {
        var heading = document.getElementById('downloads-heading');
        if (heading) heading.focus();
      }
    }
    if (clearing) {
      clearing = false;
      var result = document.querySelector('[data-testid="clear-result"]');
      var title = document.getElementById('downloads-heading');
      if (title && focusLost()) title.focus();
      if (result) say(result.textContent.trim());
    }
  });

  document.addEventListener('htmx:sseMessage', closeStaleConfirms);
  // A failed request leaves nothing to focus later.
  document.addEventListener('htmx:afterRequest', function (evt) {
    var elt = evt.detail.elt;
    var mine = elt && (elt.id === 'catalogue-form' || (elt.dataset && /^(cancel-yes|show-older|clear-finished)$/.test(elt.dataset.testid || '')));
    if (evt.detail.successful || !mine) return;
    cardsBefore = olderBefore = focusAfterCancel = null;
    clearing = false;
  });
})();
