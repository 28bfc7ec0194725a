// The official OpenAI Node SDK against `embedrt serve` over HTTPS (driven by
// tests/app/serve_gateway_test.cpp): the CA comes from NODE_EXTRA_CA_CERTS,
// as an application would configure it.
//
//   node tls_probe.mjs BASE_URL TOKEN
//
// Prints one JSON line: {"ok":true,"vectors":[...]} or
// {"ok":false,"class","message"}.
import OpenAI from "openai";

const [baseURL, token] = process.argv.slice(2);
if (!baseURL || !token) {
  console.error("usage: node tls_probe.mjs BASE_URL TOKEN");
  process.exit(2);
}
const client = new OpenAI({ apiKey: token, baseURL, maxRetries: 0,
                            timeout: 20000 });
try {
  const r = await client.embeddings.create({
    model: "m", input: ["over tls", "second"], dimensions: 8,
    encoding_format: "float" });
  console.log(JSON.stringify({ ok: true,
                               vectors: r.data.map((d) => d.embedding) }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, class: e.constructor.name,
                               message: e.message ?? "",
                               cause: String(e.cause?.cause ?? e.cause ?? "") }));
}
