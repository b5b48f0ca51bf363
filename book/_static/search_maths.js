/* Search results that read as text, not as TeX.
 *
 * The book's search page shows, under each page it finds, a snippet of that page's text. Sphinx
 * cuts the snippet from the page's HTML as it was written, before MathJax typeset the maths, so
 * formulas would show as raw TeX ("\(QK^\top\)"). Before Sphinx reads a page for its snippet,
 * this script turns each inline formula into plain text (QKᵀ) and each display formula into
 * "[formula]". It only acts on the search page (the one page that has Sphinx's `Search`).
 */
"use strict";

(() => {
  const SYMBOLS = {
    top: "ᵀ", cdot: "·", times: "×", infty: "∞", sqrt: "√", sum: "Σ", prod: "Π",
    le: "≤", leq: "≤", ge: "≥", geq: "≥", approx: "≈", neq: "≠", to: "→", rightarrow: "→",
    ldots: "…", dots: "…", cdots: "…", in: "∈", odot: "⊙", mid: "|", lVert: "‖", rVert: "‖",
    alpha: "α", beta: "β", gamma: "γ", epsilon: "ε", mu: "μ", sigma: "σ", omega: "ω", pi: "π",
    ast: "*", prime: "′",
  };

  // TeX of an inline formula -> readable text: "QK^\top / \sqrt{d_k}" -> "QKᵀ / √d_k".
  const texToText = (tex) => tex
    .replace(/^\\\(|\\\)$/g, "")
    .replace(/\^\\top\b/g, "ᵀ")
    .replace(/\\(mathrm|text|mathbf|operatorname|mathit|textbf|emph)\s*\{([^{}]*)\}/g, "$2")
    .replace(/\\([a-zA-Z]+)/g, (whole, name) => SYMBOLS[name] ?? "")
    .replace(/\\[,;:! ]/g, " ")
    .replace(/[{}]/g, "")
    .replace(/\s+/g, " ")
    .trim();

  const plainMaths = (htmlString) => {
    const page = new DOMParser().parseFromString(htmlString, "text/html");
    page.querySelectorAll("div.math").forEach((e) => { e.textContent = " [formula] "; });
    page.querySelectorAll("span.math").forEach((e) => { e.textContent = texToText(e.textContent); });
    return page.documentElement.outerHTML;
  };

  document.addEventListener("DOMContentLoaded", () => {
    // Sphinx's searchtools.js declares `Search` as a global constant on the search page only.
    if (typeof Search === "undefined" || typeof Search.htmlToText !== "function") return;
    const htmlToText = Search.htmlToText;
    Search.htmlToText = (htmlString, anchor) => htmlToText(plainMaths(htmlString), anchor);
  });
})();
