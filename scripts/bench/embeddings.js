// nginx njs handler: an OpenAI-shaped POST /v1/embeddings upstream for the
// benchmark matrix (scripts/bench/matrix.sh). It parses the request JSON,
// answers one L2-normalised vector of `dimensions` values per input (float
// list, or base64 float32 when encoding_format is "base64"; deterministic,
// derived from each text's length and characters) and waits $emb_latency_ms
// milliseconds before answering (0: at once). Not semantic; not a mock of
// faults: only the happy path every contestant exercises.
function vector(text, dims) {
  var v = new Float32Array(dims);
  var h = text.length * 2654435761 % 4294967296;
  for (var i = 0; i < text.length; i += 7) {
    h = (h * 31 + text.charCodeAt(i)) % 4294967296;
  }
  var norm = 0;
  for (var j = 0; j < dims; j++) {
    h = (h * 1103515245 + 12345) % 2147483648;
    var x = (h % 2001) / 1000 - 1;
    v[j] = x;
    norm += x * x;
  }
  norm = Math.sqrt(norm) || 1;
  for (var k = 0; k < dims; k++) {
    v[k] = v[k] / norm;
  }
  return v;
}

function fail(r, status, message) {
  r.headersOut['Content-Type'] = 'application/json';
  r.return(status, JSON.stringify({error: {message: message,
    type: 'invalid_request_error', param: null, code: null}}));
}

function embeddings(r) {
  var req;
  try {
    req = JSON.parse(r.requestText);
  } catch (e) {
    return fail(r, 400, 'malformed JSON');
  }
  var inputs = typeof req.input === 'string' ? [req.input] : req.input;
  if (!Array.isArray(inputs) || inputs.length === 0) {
    return fail(r, 400, "'input' must be a string or a non-empty array");
  }
  var dims = req.dimensions || 256;
  var base64 = req.encoding_format === 'base64';
  var data = [];
  var tokens = 0;
  for (var i = 0; i < inputs.length; i++) {
    var v = vector(String(inputs[i]), dims);
    var emb;
    if (base64) {
      emb = Buffer.from(v.buffer).toString('base64');
    } else {
      emb = [];
      for (var j = 0; j < dims; j++) {
        emb.push(v[j]);
      }
    }
    data.push({object: 'embedding', index: i, embedding: emb});
    tokens += 1 + (String(inputs[i]).length >> 2);
  }
  var body = JSON.stringify({object: 'list', data: data,
    model: req.model || 'njs-model',
    usage: {prompt_tokens: tokens, total_tokens: tokens}});
  var latency = Number(r.variables.emb_latency_ms) || 0;
  var send = function() {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(200, body);
  };
  if (latency > 0) {
    setTimeout(send, latency);
  } else {
    send();
  }
}

export default {embeddings};
