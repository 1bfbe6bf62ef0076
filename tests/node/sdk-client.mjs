// sdk-client: the official `openai` Node SDK (the version pinned in package-lock.json),
// unmodified, as a client of Valerie's OpenAI-compatible routes. Runs on Node 18 and later.
//
//   node sdk-client.mjs [BASE_URL] [--only stream-error|tools]
//
// BASE_URL includes /v1 (as the SDK's baseURL does); else VALERIE_BASE_URL, else
// http://127.0.0.1:8080/v1. Other settings, from the environment:
//   VALERIE_SDK_MODEL      the model to ask for (default gpt-4o-mini)
//   VALERIE_SDK_BAD_MODEL  a model outside VALERIE_MODELS (default not-an-allowed-model)
//   VALERIE_SDK_SESSION    the X-Session-Id to use (default sdk-<pid>-<time>)
//   VALERIE_SDK_ECHO=1     the upstream is tests/fakes/fake_llm.py: answers are "echo: " +
//                          the last user message
//   OPENAI_API_KEY         the client's key (default sk-client-not-a-real-key)
//
// Cases: chat.completions.create whole (no session; a session through per-request headers,
// then through defaultHeaders, sending only the new message), streamed (joined deltas,
// the usage chunk of stream_options.include_usage), models.list(), and a model outside
// VALERIE_MODELS (APIError 400). With --only stream-error: one streamed create whose
// upstream breaks mid-way (the caller plans it): the SDK must raise an APIError.
// With --only tools (the upstream is tests/fakes/fake_llm.py, behind either provider: it
// calls a tool when the last user message says "call <tool> {json}" and answers
// "tool said: <result>" to a tool result): one function tool with a JSON Schema, asked for
// and answered whole (the assistant message sent back as the SDK returned it), streamed
// (tool_call deltas joined by index, as SDK users do), through the SDK's helpers
// (beta.chat.completions.stream().finalChatCompletion(), runTools() whole and streamed),
// and in a session (X-Session-Id) where the second request carries only the tool result.
// Prints one JSON summary on stdout; exits 1 on any mismatch, 2 on bad usage.
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const args = process.argv.slice(2);
let only = null;
const positional = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--only') only = args[++i];
  else if (args[i].startsWith('--only=')) only = args[i].slice(7);
  else positional.push(args[i]);
}
if (only !== null && only !== 'stream-error' && only !== 'tools') {
  console.error(`sdk-client: unknown case ${only}`);
  process.exit(2);
}
const baseURL = positional[0] || process.env.VALERIE_BASE_URL || 'http://127.0.0.1:8080/v1';
const model = process.env.VALERIE_SDK_MODEL || 'gpt-4o-mini';
const badModel = process.env.VALERIE_SDK_BAD_MODEL || 'not-an-allowed-model';
const sid = process.env.VALERIE_SDK_SESSION || `sdk-${process.pid}-${Date.now()}`;
const echo = process.env.VALERIE_SDK_ECHO === '1';
// A 1x1 PNG.
const PDF_MIN = Buffer.from('%PDF-1.7\ntrailer <<>>\n%%EOF\n').toString('base64');
const PNG_1PX = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';
const apiKey = process.env.OPENAI_API_KEY || 'sk-client-not-a-real-key';

const summary = {
  ok: false, node: process.version, sdk: VERSION, base_url: baseURL, model, session: sid,
  cases: {}, failures: [],
};

function expect(cond, what) {
  if (!cond) summary.failures.push(what);
  return cond;
}

function client(extra = {}) {
  // No retries: a failure must show as it is, not be hidden by the SDK's own retries.
  return new OpenAI({ apiKey, baseURL, maxRetries: 0, timeout: 30000, ...extra });
}

function wholeProblems(c, name) {
  const ok = c && c.object === 'chat.completion' && typeof c.id === 'string' &&
    c.id.startsWith('chatcmpl-') && Number.isInteger(c.created) &&
    typeof c.model === 'string' && c.model.length > 0 &&
    Array.isArray(c.choices) && c.choices.length === 1 && c.choices[0].index === 0 &&
    c.choices[0].message && c.choices[0].message.role === 'assistant' &&
    typeof c.choices[0].message.content === 'string' &&
    c.choices[0].message.content.length > 0 && c.choices[0].finish_reason === 'stop' &&
    c.usage && Number.isInteger(c.usage.prompt_tokens) &&
    Number.isInteger(c.usage.completion_tokens) &&
    c.usage.total_tokens === c.usage.prompt_tokens + c.usage.completion_tokens;
  expect(ok, `${name}: not an OpenAI chat.completion: ${JSON.stringify(c).slice(0, 300)}`);
}

async function whole(cl, messages, name, options = undefined) {
  const { data, response } = await cl.chat.completions
    .create({ model, messages }, options)
    .withResponse();
  wholeProblems(data, name);
  const content = data?.choices?.[0]?.message?.content ?? null;
  return {
    id: data?.id, model: data?.model, content, usage: data?.usage ?? null,
    status: response.status, session_turn: response.headers.get('x-session-turn'),
    request_id: response.headers.get('x-request-id'),
  };
}

async function streamed(cl, messages, name, options = undefined) {
  const stream = await cl.chat.completions.create(
    { model, messages, stream: true, stream_options: { include_usage: true } }, options);
  const out = { chunks: 0, content: '', role: null, finish_reason: null, usage: null,
    ids: [], models: [], usage_chunk_last: false, after_finish: 0 };
  let finished = false;
  for await (const chunk of stream) {
    out.chunks++;
    expect(chunk.object === 'chat.completion.chunk', `${name}: chunk object ${chunk.object}`);
    if (!out.ids.includes(chunk.id)) out.ids.push(chunk.id);
    if (!out.models.includes(chunk.model)) out.models.push(chunk.model);
    if (chunk.choices.length === 0) {
      expect(chunk.usage, `${name}: a chunk with no choices and no usage`);
      out.usage = chunk.usage ?? null;
      out.usage_chunk_last = true;
      continue;
    }
    expect(!out.usage_chunk_last, `${name}: a chunk with choices after the usage chunk`);
    const c = chunk.choices[0];
    if (out.chunks === 1) out.role = c.delta?.role ?? null;
    if (finished) out.after_finish++;
    if (typeof c.delta?.content === 'string') out.content += c.delta.content;
    if (c.finish_reason) {
      out.finish_reason = c.finish_reason;
      finished = true;
    }
  }
  expect(out.role === 'assistant', `${name}: the first delta's role is ${out.role}`);
  expect(out.finish_reason === 'stop', `${name}: finish_reason ${out.finish_reason}`);
  expect(out.after_finish === 0, `${name}: ${out.after_finish} content chunks after finish`);
  expect(out.ids.length === 1, `${name}: the chunks carry ${out.ids.length} ids`);
  expect(out.usage_chunk_last && out.usage &&
    out.usage.total_tokens === out.usage.prompt_tokens + out.usage.completion_tokens,
  `${name}: the usage chunk: ${JSON.stringify(out.usage)}`);
  expect(out.content.length > 0, `${name}: no content`);
  return out;
}

async function run(name, fn) {
  try {
    summary.cases[name] = await fn();
  } catch (e) {
    summary.cases[name] = { threw: describe(e) };
    expect(false, `${name}: threw ${describe(e).message}`);
  }
}

function describe(e) {
  return {
    name: e?.constructor?.name, message: String(e?.message ?? e), status: e?.status ?? null,
    code: e?.code ?? null, type: e?.type ?? null, api_error: e instanceof OpenAI.APIError,
  };
}

// --- tools --------------------------------------------------------------------------------
const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city, for some days.',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' }, days: { type: 'integer', minimum: 1 } },
      required: ['city'],
      additionalProperties: false,
    },
  },
};

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// Whether `c` is a whole chat.completion that only calls get_weather with `args`.
function toolCallProblems(c, args, name) {
  const ch = c?.choices?.[0];
  const calls = ch?.message?.tool_calls;
  expect(ch?.finish_reason === 'tool_calls', `${name}: finish_reason ${ch?.finish_reason}`);
  expect(ch?.message?.role === 'assistant', `${name}: role ${ch?.message?.role}`);
  expect(ch?.message?.content === null || ch?.message?.content === '',
    `${name}: content ${JSON.stringify(ch?.message?.content)} beside the call`);
  if (!expect(Array.isArray(calls) && calls.length === 1,
    `${name}: tool_calls ${JSON.stringify(calls)}`)) return null;
  const t = calls[0];
  let parsed = null;
  try {
    parsed = JSON.parse(t.function?.arguments);
  } catch (e) {
    expect(false, `${name}: arguments are not JSON: ${JSON.stringify(t.function?.arguments)}`);
  }
  expect(typeof t.id === 'string' && t.id.length > 0, `${name}: tool call id ${t.id}`);
  expect(t.type === 'function', `${name}: tool call type ${t.type}`);
  expect(t.function?.name === 'get_weather', `${name}: tool name ${t.function?.name}`);
  expect(same(parsed, args), `${name}: arguments ${JSON.stringify(parsed)}, asked for ` +
    `${JSON.stringify(args)}`);
  expect(c.usage && c.usage.total_tokens === c.usage.prompt_tokens + c.usage.completion_tokens,
    `${name}: usage ${JSON.stringify(c.usage)}`);
  return t;
}

// A streamed create, joined as SDK users do: content appended, tool_calls by index.
async function streamJoined(cl, body, name, options = undefined) {
  const stream = await cl.chat.completions.create(
    { ...body, stream: true, stream_options: { include_usage: true } }, options);
  const out = { chunks: 0, role: null, content: '', tool_calls: [], finish_reason: null,
    usage: null, tool_call_chunks: 0 };
  for await (const chunk of stream) {
    out.chunks++;
    if (chunk.choices.length === 0) {
      out.usage = chunk.usage ?? null;
      continue;
    }
    const d = chunk.choices[0].delta ?? {};
    if (d.role) out.role = d.role;
    if (typeof d.content === 'string') out.content += d.content;
    for (const f of d.tool_calls ?? []) {
      out.tool_call_chunks++;
      expect(Number.isInteger(f.index), `${name}: a tool_call delta without index`);
      const t = (out.tool_calls[f.index] ??=
        { id: '', type: 'function', function: { name: '', arguments: '' } });
      if (f.id) t.id = f.id;
      if (f.type) t.type = f.type;
      if (f.function?.name) t.function.name += f.function.name;
      if (f.function?.arguments) t.function.arguments += f.function.arguments;
    }
    if (chunk.choices[0].finish_reason) out.finish_reason = chunk.choices[0].finish_reason;
  }
  expect(out.role === 'assistant', `${name}: role ${out.role}`);
  expect(out.usage && out.usage.total_tokens === out.usage.prompt_tokens +
    out.usage.completion_tokens, `${name}: usage chunk ${JSON.stringify(out.usage)}`);
  return out;
}

// The user message that makes the fake call get_weather with `args`.
function askFor(args) {
  return { role: 'user', content: `call get_weather ${JSON.stringify(args)}` };
}

async function tools() {
  const cl = client();
  const tl = [weatherTool];

  // Whole: the call, then the assistant message as the SDK returned it and the result.
  await run('tools_whole', async () => {
    const args = { city: 'Paris', days: 2 };
    const first = await cl.chat.completions.create({ model, messages: [askFor(args)],
      tools: tl });
    const t = toolCallProblems(first, args, 'tools_whole');
    const out = { tool: weatherTool, first_finish: first?.choices?.[0]?.finish_reason, call: t,
      assistant_message: first?.choices?.[0]?.message ?? null };
    if (!t) return out;
    const second = await cl.chat.completions.create({ model, tools: tl, messages: [
      askFor(args), first.choices[0].message,
      { role: 'tool', tool_call_id: t.id, content: 'sunny in Paris' }] });
    wholeProblems(second, 'tools_whole (answer)');
    out.final = second?.choices?.[0]?.message?.content ?? null;
    out.final_finish = second?.choices?.[0]?.finish_reason ?? null;
    expect(out.final === 'tool said: sunny in Paris', `tools_whole: the answer ${out.final}`);
    expect(!second?.choices?.[0]?.message?.tool_calls?.length,
      'tools_whole: the answer calls a tool again');
    return out;
  });

  // Streamed: tool_call deltas joined by index, then the answer streamed too.
  await run('tools_stream', async () => {
    const args = { city: 'Oslo', days: 3 };
    const s1 = await streamJoined(cl, { model, messages: [askFor(args)], tools: tl },
      'tools_stream');
    const out = { first: s1 };
    expect(s1.finish_reason === 'tool_calls', `tools_stream: finish_reason ${s1.finish_reason}`);
    expect(s1.content === '',
      `tools_stream: content ${JSON.stringify(s1.content)} beside the call`);
    if (!expect(s1.tool_calls.length === 1 && s1.tool_calls[0]?.function.name === 'get_weather',
      `tools_stream: joined tool_calls ${JSON.stringify(s1.tool_calls)}`)) return out;
    const t = s1.tool_calls[0];
    let parsed = null;
    try { parsed = JSON.parse(t.function.arguments); } catch (e) { /* checked below */ }
    expect(same(parsed, args), `tools_stream: joined arguments ${t.function.arguments}`);
    expect(t.id.length > 0, 'tools_stream: no tool call id');
    const s2 = await streamJoined(cl, { model, tools: tl, messages: [askFor(args),
      { role: 'assistant', content: null, tool_calls: s1.tool_calls },
      { role: 'tool', tool_call_id: t.id, content: 'snow in Oslo' }] }, 'tools_stream (answer)');
    out.second = s2;
    expect(s2.content === 'tool said: snow in Oslo' && s2.finish_reason === 'stop' &&
      s2.tool_calls.length === 0, `tools_stream: the answer ${JSON.stringify(s2)}`);
    return out;
  });

  // The SDK's stream helper: its events and its final chat completion.
  await run('tools_helper_stream', async () => {
    const args = { city: 'Rome', days: 1 };
    const stream = cl.beta.chat.completions.stream({ model, messages: [askFor(args)],
      tools: tl, stream_options: { include_usage: true } });
    const done = [];
    stream.on('tool_calls.function.arguments.done', (e) => done.push(
      { name: e.name, index: e.index, arguments: e.arguments }));
    const final = await stream.finalChatCompletion();
    const t = toolCallProblems(final, args, 'tools_helper_stream');
    expect(done.length === 1 && done[0].name === 'get_weather' && done[0].index === 0 &&
      same(JSON.parse(done[0].arguments), args),
    `tools_helper_stream: tool_calls.function.arguments.done events ${JSON.stringify(done)}`);
    return { call: t, done_events: done };
  });

  // runTools: the SDK calls the function and sends its result back, whole and streamed.
  for (const streaming of [false, true]) {
    const name = streaming ? 'tools_run_stream' : 'tools_run';
    await run(name, async () => {
      const args = streaming ? { city: 'Kyiv', days: 4 } : { city: 'Lima', days: 5 };
      const called = [];
      const runner = cl.beta.chat.completions.runTools({
        model, messages: [askFor(args)], stream: streaming,
        tools: [{ type: 'function', function: { ...weatherTool.function, parse: JSON.parse,
          function: (a) => { called.push(a); return `fog in ${a.city}`; } } }],
      });
      const content = await runner.finalContent();
      const msgs = runner.messages.map((m) => m.role);
      expect(called.length === 1 && same(called[0], args),
        `${name}: the tool function was called with ${JSON.stringify(called)}`);
      expect(content === `tool said: fog in ${args.city}`, `${name}: final content ${content}`);
      expect(same(msgs, ['user', 'assistant', 'tool', 'assistant']),
        `${name}: the runner's messages ${JSON.stringify(msgs)}`);
      return { called, content, roles: msgs };
    });
  }

  // A session: Valerie keeps the user message and the call; the client sends the result only.
  await run('tools_session', async () => {
    const args = { city: 'Quito', days: 6 };
    const h = { headers: { 'X-Session-Id': sid } };
    const { data: first, response: r1 } = await cl.chat.completions
      .create({ model, messages: [askFor(args)], tools: tl }, h).withResponse();
    const t = toolCallProblems(first, args, 'tools_session');
    const out = { call: t, turn_1: r1.headers.get('x-session-turn') };
    expect(out.turn_1 === '1', `tools_session: X-Session-Turn ${out.turn_1}`);
    if (!t) return out;
    const { data: second, response: r2 } = await cl.chat.completions.create({ model, tools: tl,
      messages: [{ role: 'tool', tool_call_id: t.id, content: 'rain in Quito' }] }, h)
      .withResponse();
    wholeProblems(second, 'tools_session (answer)');
    out.turn_2 = r2.headers.get('x-session-turn');
    out.final = second?.choices?.[0]?.message?.content ?? null;
    expect(out.turn_2 === '2', `tools_session: X-Session-Turn ${out.turn_2}`);
    expect(out.final === 'tool said: rain in Quito', `tools_session: the answer ${out.final}`);
    return out;
  });
}

async function main() {
  if (only === 'tools') {
    await tools();
    return;
  }
  if (only === 'stream-error') {
    await run('stream_error', async () => {
      const out = { content: '', chunks: 0, raised: null };
      try {
        const stream = await client().chat.completions.create(
          { model, messages: [{ role: 'user', content: 'one two three four five' }],
            stream: true });
        for await (const chunk of stream) {
          out.chunks++;
          out.content += chunk.choices[0]?.delta?.content ?? '';
        }
      } catch (e) {
        out.raised = describe(e);
      }
      expect(out.raised && out.raised.api_error,
        `stream_error: the SDK raised no APIError on a broken stream: ${JSON.stringify(out)}`);
      expect(out.chunks > 0, 'stream_error: no content before the break');
      return out;
    });
    return;
  }

  const cl = client();
  const q1 = 'hello from the sdk';
  await run('whole', async () => {
    const r = await whole(cl, [{ role: 'system', content: 'Be brief.' },
      { role: 'user', content: q1 }], 'whole');
    expect(r.session_turn === null, `whole: X-Session-Turn ${r.session_turn} without a session`);
    if (echo) expect(r.content === `echo: ${q1}`, `whole: content ${JSON.stringify(r.content)}`);
    return r;
  });

  // A session: turn 1 through a per-request header, turn 2 through defaultHeaders, each
  // sending only its new message.
  await run('session_turn_1', async () => {
    const r = await whole(cl, [{ role: 'user', content: 'my name is Ada' }], 'session_turn_1',
      { headers: { 'X-Session-Id': sid } });
    expect(r.session_turn === '1', `session_turn_1: X-Session-Turn ${r.session_turn}`);
    return r;
  });
  const scl = client({ defaultHeaders: { 'X-Session-Id': sid } });
  await run('session_turn_2', async () => {
    const r = await whole(scl, [{ role: 'user', content: 'what is my name?' }], 'session_turn_2');
    expect(r.session_turn === '2', `session_turn_2: X-Session-Turn ${r.session_turn}`);
    if (echo) {
      expect(r.content === 'echo: what is my name?', `session_turn_2: ${r.content}`);
    } else {
      expect(r.content.includes('my name is Ada'),
        `session_turn_2: the answer does not remember turn 1: ${r.content}`);
    }
    return r;
  });

  const q2 = 'stream this answer please';
  await run('stream', async () => {
    const r = await streamed(cl, [{ role: 'user', content: q2 }], 'stream');
    if (echo) expect(r.content === `echo: ${q2}`, `stream: content ${JSON.stringify(r.content)}`);
    return r;
  });
  await run('stream_session_turn_3', async () => {
    const r = await streamed(scl, [{ role: 'user', content: 'and now streamed' }],
      'stream_session_turn_3');
    if (echo) expect(r.content === 'echo: and now streamed', `stream_session_turn_3: ${r.content}`);
    else expect(r.content.includes('turn 3'), `stream_session_turn_3: ${r.content}`);
    return r;
  });
  // The same question whole and streamed gives the same answer (a deterministic upstream).
  await run('stream_matches_whole', async () => {
    const w = await whole(cl, [{ role: 'user', content: q2 }], 'stream_matches_whole');
    const s = summary.cases.stream;
    expect(s && s.content === w.content,
      `stream_matches_whole: ${JSON.stringify(s?.content)} != ${JSON.stringify(w.content)}`);
    expect(s && s.usage && JSON.stringify(s.usage) === JSON.stringify(w.usage),
      `stream_matches_whole: usage ${JSON.stringify(s?.usage)} != ${JSON.stringify(w.usage)}`);
    return { content: w.content, usage: w.usage };
  });

  // An image as the SDK sends one: a text part and an image_url part with a data URL.
  await run('image', async () => {
    const url = `data:image/png;base64,${PNG_1PX}`;
    const r = await whole(cl, [{ role: 'user', content: [
      { type: 'text', text: 'what is in this picture?' },
      { type: 'image_url', image_url: { url, detail: 'low' } }] }], 'image');
    if (echo) {
      expect(r.content === 'echo: what is in this picture? [1 image]',
        `image: ${JSON.stringify(r.content)}`);
    } else {
      expect(r.content.includes('with 1 image'), `image: ${JSON.stringify(r.content)}`);
    }
    return r;
  });

  // A PDF as the SDK sends one: a file part with a base64 data URL and a filename.
  await run('file', async () => {
    const r = await whole(cl, [{ role: 'user', content: [
      { type: 'text', text: 'summarize this' },
      { type: 'file', file: { filename: 'note.pdf', file_data: `data:application/pdf;base64,${PDF_MIN}` } }] }],
    'file');
    if (echo) {
      expect(r.content === 'echo: summarize this [1 file]', `file: ${JSON.stringify(r.content)}`);
    } else {
      expect(r.content.includes('with 1 file'), `file: ${JSON.stringify(r.content)}`);
    }
    return r;
  });

  await run('models', async () => {
    const ids = [];
    for await (const m of cl.models.list()) {
      expect(m.object === 'model' && typeof m.id === 'string', `models: ${JSON.stringify(m)}`);
      ids.push(m.id);
    }
    expect(ids.length > 0, 'models: an empty list');
    // models.retrieve: the same object for a listed id; an unknown one is the SDK's NotFoundError
    const one = await cl.models.retrieve(ids[0]);
    expect(one.id === ids[0] && one.object === 'model', `models.retrieve: ${JSON.stringify(one)}`);
    let missing = null;
    try {
      await cl.models.retrieve('no-such-model-here');
    } catch (e) {
      missing = e;
    }
    expect(missing instanceof OpenAI.NotFoundError && missing.status === 404 &&
      missing.code === 'model_not_found', `models.retrieve of an unknown id: ${missing}`);
    return { ids, retrieved: one.id };
  });

  await run('model_not_allowed', async () => {
    try {
      await cl.chat.completions.create({ model: badModel,
        messages: [{ role: 'user', content: 'hi' }] });
    } catch (e) {
      const d = describe(e);
      expect(e instanceof OpenAI.APIError && e instanceof OpenAI.BadRequestError &&
        e.status === 400 && e.code === 'model_not_allowed',
      `model_not_allowed: ${JSON.stringify(d)}`);
      return d;
    }
    expect(false, 'model_not_allowed: no error raised');
    return { raised: null };
  });
}

main().then(() => {
  summary.ok = summary.failures.length === 0;
  console.log(JSON.stringify(summary, null, 2));
  process.exit(summary.ok ? 0 : 1);
}, (e) => {
  summary.failures.push(`crashed: ${e?.stack ?? e}`);
  console.log(JSON.stringify(summary, null, 2));
  process.exit(1);
});
