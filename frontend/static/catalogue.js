/*
 * Longhaul catalogue: which files are selected, kept while the person pages or searches.
 *
 * - The selection (file id -> size) lives in sessionStorage, not in the checkboxes: rows of
 *   other pages are not in the DOM, so the form sends every selected id (htmx:configRequest)
 *   and rows that come back on screen are ticked again.
 * - Shift+click ticks (or unticks) every row between the last clicked box and this one.
 * - "Select all" covers the rows on screen.
 * - Paging moves focus to the results' count; paging and searching read the count out.
 * - The summary counts the selection against the per-download limit before anything is sent
 *   ("12 files selected · 3.4 MB · up to 1,000 per download"); over it, it says by how much.
 */
(function () {
  'use strict';

  var STORE_KEY = 'longhaul:selection';
  var selected = new Map();
  var anchor = null;

  function form() {
    return document.getElementById('catalogue-form');
  }

  function boxes() {
    var current = form();
    return current ? Array.prototype.slice.call(current.querySelectorAll('input[name="file_ids"]')) : [];
  }

  function sizeOf(box) {
    var row = box.closest('[data-file-id]');
    return row ? Number(row.dataset.size || 0) : 0;
  }

  function load() {
    selected = new Map();
    try {
      var saved = JSON.parse(window.sessionStorage.getItem(STORE_KEY) || '[]');
      saved.forEach(function (pair) { selected.set(String(pair[0]), Number(pair[1]) || 0); });
    } catch (ignored) { /* storage unavailable or corrupt: start empty */ }
  }

  function save() {
    try {
      window.sessionStorage.setItem(STORE_KEY, JSON.stringify(Array.from(selected.entries())));
    } catch (ignored) { /* private mode: the selection lasts as long as the page */ }
  }

  function set(box, on) {
    box.checked = on;
    if (on) selected.set(box.value, sizeOf(box));
    else selected.delete(box.value);
  }

  function humanBytes(size) {
    var units = ['B', 'KB', 'MB', 'GB', 'TB'];
    var value = size;
    var unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    if (unit === 0) return value + ' B';
    return (value < 100 ? value.toFixed(1) : Math.round(value)) + ' ' + units[unit];
  }

  function count(n) {
    return n.toLocaleString('en-US');
  }

  function render() {
    var current = form();
    if (!current) return;
    var visible = boxes();
    visible.forEach(function (box) { box.checked = selected.has(box.value); });
    var limit = Number(current.dataset.maxFiles || 0);
    var n = selected.size;
    var bytes = 0;
    selected.forEach(function (size) { bytes += size; });
    var summary = document.getElementById('selection-summary');
    if (summary) {
      var text = n ? count(n) + (n === 1 ? ' file' : ' files') + ' selected · ' + humanBytes(bytes) : 'No files selected';
      var over = limit && n > limit;
      if (over) text += ' · ' + count(n - limit) + ' over the limit of ' + count(limit) + ' per download';
      else if (limit) text += ' · up to ' + count(limit) + ' per download';
      summary.textContent = text;
      summary.classList.toggle('selection-over', !!over);
    }
    var all = document.getElementById('select-all');
    if (all) {
      var ticked = visible.filter(function (box) { return box.checked; }).length;
      all.checked = visible.length > 0 && ticked === visible.length;
      all.indeterminate = ticked > 0 && ticked < visible.length;
    }
  }

  // Shift+click: the range from the last clicked box takes this box's new state.
  document.addEventListener('click', function (evt) {
    var box = evt.target;
    if (!box.matches || !box.matches('#catalogue-form input[name="file_ids"]')) return;
    var visible = boxes();
    if (evt.shiftKey && anchor && visible.indexOf(anchor) >= 0) {
      var from = visible.indexOf(anchor);
      var to = visible.indexOf(box);
      visible.slice(Math.min(from, to), Math.max(from, to) + 1).forEach(function (each) {
        set(each, box.checked);
      });
    }
    anchor = box;
  });

  document.addEventListener('change', function (evt) {
    var target = evt.target;
    if (!target.closest || !target.closest('#catalogue-form')) return;
    if (target.id === 'select-all') {
      boxes().forEach(function (box) { set(box, target.checked); });
    } else if (target.name === 'file_ids') {
      set(target, target.checked);
    } else {
      return;
    }
    save();
    render();
  });

  // The form holds only the rows on screen; the request carries the whole selection.
  document.addEventListener('htmx:configRequest', function (evt) {
    if (evt.detail.elt !== form() || evt.detail.verb !== 'post') return;
    var data = evt.detail.formData;
    if (!data) return;
    var onScreen = data.getAll('file_ids');
    data.delete('file_ids');
    // Order: as ticked, which is the order the person built the archive in.
    Array.from(selected.keys()).concat(onScreen.filter(function (id) { return !selected.has(id); }))
      .forEach(function (id) { data.append('file_ids', id); });
  });

  document.addEventListener('htmx:afterRequest', function (evt) {
    if (evt.detail.elt !== form() || !evt.detail.successful || evt.detail.requestConfig.verb !== 'post') return;
    selected.clear();
    anchor = null;
    save();
    render();
  });

  // After a page link focus goes to the results' count (the link itself is gone); after a
  // search or sort it stays in the field, and the count is read out either way.
  var resultsBy = null;
  document.addEventListener('htmx:beforeRequest', function (evt) {
    var elt = evt.detail.elt;
    if (!elt || !elt.closest) return;
    if (elt.closest('[data-testid="catalogue-pager"]')) resultsBy = 'pager';
    else if (elt.id === 'catalogue-query') resultsBy = 'query';
  });

  function announceResults() {
    var count = document.getElementById('catalogue-count');
    var region = document.getElementById('announcer');
    if (!count || !region) return;
    if (resultsBy === 'pager') count.focus();
    region.textContent = '';
    var text = count.textContent.trim();
    setTimeout(function () { region.textContent = text; }, 120);
  }

  // Rows swapped in (another page, a search) show the selection they are part of.
  document.addEventListener('htmx:afterSettle', function (evt) {
    render();
    var config = evt.detail && evt.detail.requestConfig;
    var ours = config && typeof config.path === 'string' && config.path.indexOf('/catalogue') === 0;
    if (resultsBy && ours) {
      announceResults();
      resultsBy = null;
    }
  });
  document.addEventListener('DOMContentLoaded', function () {
    load();
    render();
  });
  // Back/forward cache: another tab may have changed nothing, but this page's boxes may lie.
  window.addEventListener('pageshow', function (evt) {
    if (evt.persisted) {
      load();
      render();
    }
  });
})();
