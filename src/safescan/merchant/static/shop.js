"use strict";
(function () {
  const {$, showState, showReceipt, countdown, watch} = window.safescanOrder;  // order.js

  function render(doc) {
    if (!showState(doc)) return;
    countdown(doc);
    if (doc.paid) {
      showReceipt("Paid: the institution's signed receipt verified",
        [["Amount", doc.paid.amount_display], ["Payment", doc.paid.payment_id]]);
    }
  }

  const checkout = $("checkout");
  if (!checkout) return;
  const first = JSON.parse(checkout.dataset.order);
  render(first);
  watch(first.events, render);
})();
