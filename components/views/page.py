"""The studio page's own CSS and browser scripts (strings, handed to Gradio by ``app.py``): a bounded video player,
the progress panel, the plan notice, table headers that do not wrap letter by letter, the prompt counter and the
keyboard keys.
"""

from __future__ import annotations

from components.generation.request import LIMITS

__all__ = ["CSS", "HEAD", "PROMPT_COUNTER_JS", "SCROLL_TO_RESULT_JS", "SCROLL_TO_VIDEO_JS", "prompt_counter"]

CSS = """
#result-video { max-height: min(62vh, 560px); }
#result-video video { max-height: min(58vh, 520px); width: 100%; object-fit: contain; background: #111; }
.phase-board .phase { display: grid; grid-template-columns: 9em 1fr 8em; align-items: center; gap: .5em;
  font-size: .9em; line-height: 1.5; }
.phase-board progress { width: 100%; height: .75em; }
.phase-board .phase.active .phase-name { font-weight: 600; }
.phase-board .phase-detail { font-variant-numeric: tabular-nums; }
.phase-board .phase-eta { margin: .35em 0 0; font-size: .9em; }
#prompt-counter { font-size: .85em; text-align: right; min-height: 1.2em; }
#prompt-counter p { margin: 0; }
#model-table th, #cleanup-table th, #model-table th *, #cleanup-table th * { white-space: nowrap; word-break: normal; }
#history-gallery video { object-fit: contain; }
#plan-notice-message { padding: .5em .75em; }
"""

# Ctrl+Enter (⌘+Enter) generates from anywhere on the page; Esc stops the running generation.
HEAD = """
<script>
(() => {
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      const button = document.querySelector("#generate-button");
      if (button) { event.preventDefault(); button.click(); }
    } else if (event.key === "Escape" && !document.querySelector('[aria-expanded="true"]')) {
      // (an open dropdown or menu takes Esc for itself)
      const button = document.querySelector("#stop-button");
      if (button && button.offsetParent !== null) { button.click(); }
    }
  }, true);
})();
</script>
"""

#: On a narrow screen the result sits below the form: bring it into view (not on a wide one, where it is beside).
SCROLL_TO_RESULT_JS = """
() => {
  const result = document.querySelector("#result-column");
  if (result && result.getBoundingClientRect().top > window.innerHeight * 0.6) {
    result.scrollIntoView({ behavior: "instant", block: "start" });
  }
}
"""

#: When the run ends, the finished video is brought fully into view if it is not (a phone's screen).
SCROLL_TO_VIDEO_JS = """
() => {
  const video = document.querySelector("#result-video");
  if (!video) { return; }
  const box = video.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) {
    video.scrollIntoView({ behavior: "instant", block: box.height < window.innerHeight ? "center" : "start" });
  }
}
"""

#: Counts the prompt's characters as Python does (code points) and warns before the limit refuses it.
PROMPT_COUNTER_JS = f"""
(text) => {{
  const count = [...(text || "")].length;
  const limit = {LIMITS.max_prompt_chars};
  if (count > limit) {{
    return `⚠ ${{count}} / ${{limit}} characters: ${{count - limit}} too many: shorten it, a longer prompt is refused.`;
  }}
  return `${{count}} / ${{limit}} characters`;
}}
"""


def prompt_counter(text: str | None) -> str:
    """The counter's text for ``text`` (what the script shows, for the first render)."""
    count, limit = len(text or ""), LIMITS.max_prompt_chars
    if count > limit:
        return f"⚠ {count} / {limit} characters: {count - limit} too many: shorten it, a longer prompt is refused."
    return f"{count} / {limit} characters"
