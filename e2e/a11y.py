"""Accessibility checks the journeys share: axe-core (vendored) and the focus ring's contrast."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Locator, Page

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
# WCAG 2.0, 2.1 and 2.2, levels A and AA: what issue 13 asks of the page.
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
# WCAG 2.2 SC 1.4.11 and 2.4.13: a focus indicator of at least 3:1 against what it touches.
MIN_FOCUS_CONTRAST = 3.0
MIN_FOCUS_WIDTH_PX = 2.0


def _checked_axe() -> Path:
    digest = hashlib.sha256(AXE.read_bytes()).hexdigest()
    assert digest == AXE_SHA256, f"e2e/vendor/axe.min.js changed ({digest}); see VERSIONS.md"
    return AXE


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.2 AA violations on the page as it is now (injects axe once).

    The page's CSP allows only its own scripts; contexts that run axe bypass it (Playwright's
    `bypass_csp`), as the other journeys, under the CSP, show the page needs nothing more.
    """
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.add_script_tag(path=str(_checked_axe()))
    result: dict[str, Any] = await page.evaluate(
        "tags => axe.run(document, "
        "{runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        WCAG_AA,
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
            "summary": v["nodes"][0]["failureSummary"] if v["nodes"] else "",
        }
        for v in result["violations"]
    ]


async def assert_no_axe_violations(page: Page, where: str) -> None:
    violations = await axe_violations(page)
    assert violations == [], f"axe-core, {where}: {violations}"


# Every text the live region has held, in order (it is emptied and refilled per message).
RECORD_ANNOUNCEMENTS = """
window.__said = [];
document.addEventListener('DOMContentLoaded', function () {
  var region = document.getElementById('announcer');
  if (!region) return;
  new MutationObserver(function () {
    var text = region.textContent.trim();
    if (text) window.__said.push(text);
  }).observe(region, {childList: true, characterData: true, subtree: true});
});
"""


async def announcements(page: Page) -> list[str]:
    said: list[str] = await page.evaluate("() => window.__said || []")
    return said


def _rgb(css: str) -> tuple[float, float, float]:
    numbers = [float(n) for n in re.findall(r"[\d.]+", css)[:3]]
    assert len(numbers) == 3, css
    return numbers[0], numbers[1], numbers[2]


def _luminance(css: str) -> float:
    def channel(value: float) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in _rgb(css))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two CSS `rgb()` colours."""
    high, low = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


async def focus_ring(element: Locator) -> dict[str, Any]:
    """The focused element's outline, and the background its outline sits on (the nearest
    ancestor with an opaque one: the ring is drawn outside the element, offset by 2 px)."""
    ring: dict[str, Any] = await element.evaluate(
        """el => {
          const style = getComputedStyle(el);
          let node = el.parentElement, behind = 'rgb(255, 255, 255)';
          while (node) {
            const bg = getComputedStyle(node).backgroundColor;
            const clear = !bg || bg === 'transparent' || bg.startsWith('rgba(0, 0, 0, 0)');
            if (!clear) { behind = bg; break; }
            node = node.parentElement;
          }
          return {style: style.outlineStyle, width: parseFloat(style.outlineWidth),
                  color: style.outlineColor, behind: behind,
                  focusVisible: el.matches(':focus-visible')};
        }"""
    )
    return ring


def assert_visible_ring(ring: dict[str, Any]) -> None:
    assert ring["focusVisible"], ring
    assert ring["style"] == "solid", ring
    assert ring["width"] >= MIN_FOCUS_WIDTH_PX, ring
    assert contrast(ring["color"], ring["behind"]) >= MIN_FOCUS_CONTRAST, ring
