/* The tool playground (the admin's "Test call" page, transports.admin_views.tool_test_call).

Without this script the form posts and the page comes back with the report. With it, the same form is
posted with `Accept: text/event-stream`, and the answer's server-sent events are shown as they arrive:
`progress` ({progress, total, message}) moves the progress bar, `log` ({level, data, logger}) and
`notification` ({method, params}) add to the log list, and `result` (the report's HTML) or `error`
({message, fields}) ends the call. "Stop the call" (or leaving the page) closes the connection, and the
gateway cancels the call. No framework, no build step. */
(function () {
  "use strict";

  var form = document.getElementById("test-call-form");
  if (!form || !window.fetch || !window.AbortController || !window.TextDecoder || !window.FormData) {
    return;
  }
  var live = document.getElementById("call-live");
  var bar = document.getElementById("call-progress");
  var status = document.getElementById("call-status");
  var log = document.getElementById("call-log");
  var logEmpty = document.getElementById("call-log-empty");
  var errorBox = document.getElementById("call-error");
  var slot = document.getElementById("call-result-slot");
  var stop = document.getElementById("call-stop");
  var submit = form.querySelector("[type=submit]");
  if (!live || !bar || !status || !log || !logEmpty || !errorBox || !slot || !stop || !submit) {
    return;
  }
  var controller = null;

  function say(text) {
    status.textContent = text;
  }

  function showError(message) {
    errorBox.textContent = "";
    var note = document.createElement("p");
    note.className = "errornote";
    note.style.whiteSpace = "pre-line";
    note.textContent = message;
    errorBox.appendChild(note);
  }

  function markFields(fields) {
    Object.keys(fields || {}).forEach(function (id) {
      var field = document.getElementById(id);
      if (field) {
        field.setAttribute("aria-invalid", "true");
      }
    });
  }

  function resetBar() {
    bar.removeAttribute("value"); // indeterminate until the tool says how far it is
    bar.removeAttribute("max");
    ["aria-valuemin", "aria-valuemax", "aria-valuenow"].forEach(function (name) {
      bar.removeAttribute(name);
    });
    bar.setAttribute("aria-valuetext", "Running");
  }

  function showProgress(data) {
    var progress = Number(data.progress);
    var total = data.total === null || data.total === undefined ? NaN : Number(data.total);
    var text;
    if (isFinite(progress) && isFinite(total) && total > 0) {
      bar.max = total;
      bar.value = Math.min(Math.max(progress, 0), total);
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", String(total));
      bar.setAttribute("aria-valuenow", String(bar.value));
      text = progress + " of " + total;
    } else {
      bar.removeAttribute("value");
      text = String(data.progress);
    }
    if (data.message) {
      text += ": " + data.message;
    }
    bar.setAttribute("aria-valuetext", text);
    say("Progress " + text);
  }

  function addLog(label, data) {
    var item = document.createElement("li");
    var code = document.createElement("code");
    code.textContent = label;
    item.appendChild(code);
    item.appendChild(document.createTextNode(" " + (typeof data === "string" ? data : JSON.stringify(data))));
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
    logEmpty.hidden = true;
  }

  function finished() {
    if (!log.children.length) {
      logEmpty.textContent = "None: the tool sent no log messages.";
    }
    controller = null;
    submit.removeAttribute("aria-disabled");
    if (document.activeElement === stop) {
      submit.focus(); // the stop button is about to vanish: keep the keyboard user's place
    }
    stop.hidden = true;
    slot.removeAttribute("aria-busy");
  }

  function dispatch(event, data) {
    var parsed;
    if (event === "result") {
      slot.innerHTML = data;
      if (!bar.hasAttribute("value")) {
        bar.max = 1;
        bar.value = 1;
      }
      var heading = slot.querySelector("#call-result h2");
      say("Done. " + (heading ? heading.textContent.replace(/\s+/g, " ").trim() : ""));
      return true;
    }
    try {
      parsed = JSON.parse(data);
    } catch (err) {
      return false;
    }
    if (event === "progress") {
      showProgress(parsed);
    } else if (event === "log") {
      addLog(String(parsed.level) + (parsed.logger ? " " + parsed.logger : ""), parsed.data);
    } else if (event === "notification") {
      addLog(String(parsed.method), parsed.params);
    } else if (event === "error") {
      showError(parsed.message);
      markFields(parsed.fields);
      say("The call did not run: " + parsed.message);
      return true;
    }
    return false;
  }

  /* Server-sent events from a fetch body (EventSource cannot POST): lines up to a blank one make an
  event; `event:` names it, `data:` lines are its data, `:` lines are comments. Resolves with whether a
  final event (result or error) came. */
  function readEvents(reader) {
    var decoder = new TextDecoder();
    var buffer = "";
    var name = "message";
    var data = [];
    var ended = false;

    function line(text) {
      if (text === "") {
        if (data.length) {
          ended = dispatch(name, data.join("\n")) || ended;
        }
        name = "message";
        data = [];
        return;
      }
      if (text.charAt(0) === ":") {
        return;
      }
      var colon = text.indexOf(":");
      var field = colon < 0 ? text : text.slice(0, colon);
      var value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.charAt(0) === " ") {
        value = value.slice(1);
      }
      if (field === "event") {
        name = value;
      } else if (field === "data") {
        data.push(value);
      }
    }

    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) {
          buffer += decoder.decode();
          if (buffer) {
            buffer.split(/\r?\n/).forEach(line);
          }
          line("");
          return ended;
        }
        buffer += decoder.decode(chunk.value, { stream: true });
        var lines = buffer.split(/\r?\n/);
        buffer = lines.pop();
        lines.forEach(line);
        return pump();
      });
    }
    return pump();
  }

  form.addEventListener("submit", function (event) {
    if (controller) {
      event.preventDefault();
      return;
    }
    event.preventDefault();
    var body = new FormData(form);
    controller = new AbortController();
    errorBox.textContent = "";
    form.querySelectorAll("[aria-invalid]").forEach(function (field) {
      field.removeAttribute("aria-invalid");
    });
    log.textContent = "";
    logEmpty.textContent = "None yet.";
    logEmpty.hidden = false;
    resetBar();
    live.hidden = false;
    slot.textContent = "";
    slot.setAttribute("aria-busy", "true");
    // aria-disabled, not disabled: a disabled button would drop the keyboard focus; the handler above
    // ignores a second submit while a call runs.
    submit.setAttribute("aria-disabled", "true");
    stop.hidden = false;
    say("Calling the tool…");
    fetch(form.action || window.location.href, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { Accept: "text/event-stream" },
      signal: controller.signal,
    })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (type.indexOf("text/event-stream") !== 0 || !response.body) {
          // Not the stream (signed out, an expired CSRF token, an older gateway): post the form the
          // plain way, and the browser shows whatever the gateway answers to that.
          finished();
          say("");
          form.submit();
          return;
        }
        return readEvents(response.body.getReader()).then(function (ended) {
          if (!ended) {
            showError("The connection closed before the call's answer came: the gateway stopped or the network failed. The call was cancelled.");
            say("The call ended without an answer.");
          }
          finished();
        });
      })
      .catch(function (err) {
        if (err && err.name === "AbortError") {
          say("Stopped: the call was cancelled.");
        } else {
          showError("Could not reach the gateway: " + (err && err.message ? err.message : err));
          say("The call failed.");
        }
        finished();
      });
  });

  stop.addEventListener("click", function () {
    if (controller) {
      controller.abort();
    }
  });
})();
