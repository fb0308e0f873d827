// Skinmenu site script: formats prices for the visitor's locale. Progressive enhancement only.
(function () {
    "use strict";
    var format;
    try {
        format = new Intl.NumberFormat(document.documentElement.lang || undefined, {
            style: "currency",
            currency: document.body.getAttribute("data-currency") || "EUR",
        });
    } catch (e) {
        return;
    }
    document.querySelectorAll("[data-price]").forEach(function (el) {
        var value = Number(el.getAttribute("data-price"));
        if (!Number.isNaN(value)) {
            el.textContent = format.format(value);
        }
    });
})();
