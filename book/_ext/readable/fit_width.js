// Nothing wider than its column (book/_ext/readable_pages.py). Runs after MathJax has typeset the
// page and again when the window changes size.
//
// - An equation wider than its column is drawn smaller until it fits: MathJax 3 cannot break a line
//   inside an equation. Display equations are measured against their own box, inline ones against
//   the paragraph, list item or table cell that holds them.
// - A table wider than its column with its words whole is marked "lrq-squeezed", and the style
//   sheet then lets its cells break long words.
(function () {
  function inner(el) {
    var style = getComputedStyle(el);
    return el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  }
  function fitMaths() {
    document.querySelectorAll("mjx-container").forEach(function (eq) {
      eq.style.fontSize = "";
      var display = eq.getAttribute("display") === "true";
      var holder = display ? eq.parentElement : eq.closest("p, li, td, th, dd, dt, div");
      if (!holder) {
        return;
      }
      var box = inner(holder);
      var width = display ? eq.scrollWidth : eq.getBoundingClientRect().width;
      if (box > 0 && width > box) {
        eq.style.fontSize = Math.floor((100 * box) / width) + "%";
      }
    });
  }
  function fitTables() {
    document.querySelectorAll(".bd-article table").forEach(function (table) {
      table.classList.remove("lrq-squeezed");
      var box = inner(table.parentElement);
      if (box > 0 && table.scrollWidth > box) {
        table.classList.add("lrq-squeezed");
      }
    });
  }
  function fit() {
    fitTables();
    fitMaths();
  }
  function whenTypeset() {
    if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
      window.MathJax.startup.promise.then(fit);
    } else {
      fit();
    }
  }
  window.addEventListener("load", whenTypeset);
  var timer;
  window.addEventListener("resize", function () {
    clearTimeout(timer);
    timer = setTimeout(fit, 150);
  });
})();
