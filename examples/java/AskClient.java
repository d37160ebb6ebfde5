// Ask a ragtune server from Java, with nothing but the JDK (17+):
//
//     java AskClient.java http://127.0.0.1:8000 "How many days of annual leave do employees get?"
//     java AskClient.java http://127.0.0.1:8000 "..." my-tuned-run      # a tuned adapter
//
// It calls POST /ask (answer + sources), then POST /v1/chat/completions twice, plain and
// streamed (server-sent events). The API key, if the server has one, comes from the
// environment variable RAGTUNE_API_KEY. java.net.http.HttpClient is used with its defaults,
// which offer an HTTP/2 upgrade (Upgrade: h2c) on plain http; ragtune answers such requests
// over HTTP/1.1 with the body intact.

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

public class AskClient {

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: java AskClient.java URL \"question\" [model]");
            System.exit(2);
        }
        String base = args[0].replaceAll("/+$", "");
        String question = args[1];
        String model = args.length > 2 ? args[2] : "base";
        HttpClient http = HttpClient.newHttpClient();

        // 1. /ask: the answer, with [n] markers that point at the returned sources.
        String askBody = "{\"question\": " + Json.quote(question) + ", \"model\": " + Json.quote(model)
                + ", \"use_rag\": true}";
        Map<?, ?> ask = (Map<?, ?>) Json.parse(send(http, base + "/ask", askBody).body());
        System.out.println("== /ask (id " + ask.get("id") + ")");
        System.out.println("answer: " + ask.get("answer"));
        for (Object item : (List<?>) ask.get("sources")) {
            Map<?, ?> s = (Map<?, ?>) item;
            System.out.printf("source [%s] %s #%s (score %s)%n", Json.num(s.get("n")), s.get("source"),
                    Json.num(s.get("chunk_index")), s.get("score"));
        }

        // 2. /v1/chat/completions, OpenAI-style; the "ragtune" extension turns retrieval on.
        String chatBody = "{\"model\": " + Json.quote(model) + ", \"messages\": [{\"role\": \"user\", "
                + "\"content\": " + Json.quote(question) + "}], \"ragtune\": {\"use_rag\": true}";
        Map<?, ?> chat = (Map<?, ?>) Json.parse(send(http, base + "/v1/chat/completions", chatBody + "}").body());
        Map<?, ?> choice = (Map<?, ?>) ((List<?>) chat.get("choices")).get(0);
        System.out.println("== /v1/chat/completions");
        System.out.println("content: " + ((Map<?, ?>) choice.get("message")).get("content"));
        System.out.println("finish_reason: " + choice.get("finish_reason"));

        // 3. The same, streamed: one "data: {chunk}" line per delta, then "data: [DONE]".
        System.out.println("== /v1/chat/completions (stream)");
        HttpResponse<Stream<String>> stream = http.send(
                request(base + "/v1/chat/completions", chatBody + ", \"stream\": true}"),
                HttpResponse.BodyHandlers.ofLines());
        check(stream.statusCode(), "(streamed response)");
        StringBuilder streamed = new StringBuilder();
        stream.body().filter(line -> line.startsWith("data: ")).map(line -> line.substring(6))
                .takeWhile(data -> !data.equals("[DONE]")).forEach(data -> {
                    Map<?, ?> chunk = (Map<?, ?>) Json.parse(data);
                    List<?> choices = (List<?>) chunk.get("choices");
                    if (choices == null || choices.isEmpty()) return;
                    Object delta = ((Map<?, ?>) ((Map<?, ?>) choices.get(0)).get("delta")).get("content");
                    if (delta != null) {
                        streamed.append(delta);
                        System.out.print(delta);
                        System.out.flush();
                    }
                });
        System.out.println();
        System.out.println("streamed: " + streamed.length() + " characters");
    }

    static HttpRequest request(String url, String json) {
        HttpRequest.Builder builder = HttpRequest.newBuilder(URI.create(url))
                .timeout(Duration.ofMinutes(5))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(json));
        String key = System.getenv("RAGTUNE_API_KEY");
        if (key != null && !key.isEmpty()) builder.header("Authorization", "Bearer " + key);
        return builder.build();
    }

    static HttpResponse<String> send(HttpClient http, String url, String json)
            throws IOException, InterruptedException {
        HttpResponse<String> response = http.send(request(url, json), HttpResponse.BodyHandlers.ofString());
        check(response.statusCode(), response.body());
        return response;
    }

    static void check(int status, String body) {
        if (status / 100 == 2) return;
        String message = body;
        try {
            message = String.valueOf(((Map<?, ?>) ((Map<?, ?>) Json.parse(body)).get("error")).get("message"));
        } catch (RuntimeException ignored) {
            // not a JSON error body: show it as it is
        }
        System.err.println("HTTP " + status + ": " + message);
        System.exit(1);
    }

    /** Just enough JSON: parse objects, arrays, strings, numbers, booleans, null; quote strings. */
    static final class Json {
        private final String s;
        private int i;

        private Json(String s) { this.s = s; }

        static Object parse(String text) {
            Json p = new Json(text);
            Object value = p.value();
            p.ws();
            if (p.i != p.s.length()) throw p.error("trailing characters");
            return value;
        }

        static String num(Object n) {
            return n instanceof Double d && d == Math.rint(d) ? String.valueOf(d.longValue()) : String.valueOf(n);
        }

        static String quote(String text) {
            StringBuilder out = new StringBuilder("\"");
            for (char c : text.toCharArray()) {
                switch (c) {
                    case '"' -> out.append("\\\"");
                    case '\\' -> out.append("\\\\");
                    case '\n' -> out.append("\\n");
                    case '\r' -> out.append("\\r");
                    case '\t' -> out.append("\\t");
                    default -> out.append(c < 0x20 ? String.format("\\u%04x", (int) c) : String.valueOf(c));
                }
            }
            return out.append('"').toString();
        }

        private RuntimeException error(String what) {
            return new IllegalArgumentException("bad JSON at " + i + ": " + what);
        }

        private void ws() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++;
        }

        private Object value() {
            ws();
            if (i >= s.length()) throw error("unexpected end");
            char c = s.charAt(i);
            if (c == '{') return object();
            if (c == '[') return array();
            if (c == '"') return string();
            if (s.startsWith("true", i)) { i += 4; return Boolean.TRUE; }
            if (s.startsWith("false", i)) { i += 5; return Boolean.FALSE; }
            if (s.startsWith("null", i)) { i += 4; return null; }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) i++;
            if (start == i) throw error("unexpected '" + c + "'");
            return Double.parseDouble(s.substring(start, i));
        }

        private Map<String, Object> object() {
            Map<String, Object> map = new LinkedHashMap<>();
            i++;
            ws();
            if (s.charAt(i) == '}') { i++; return map; }
            while (true) {
                ws();
                String key = string();
                ws();
                if (s.charAt(i++) != ':') throw error("expected ':'");
                map.put(key, value());
                ws();
                char c = s.charAt(i++);
                if (c == '}') return map;
                if (c != ',') throw error("expected ',' or '}'");
            }
        }

        private List<Object> array() {
            List<Object> list = new ArrayList<>();
            i++;
            ws();
            if (s.charAt(i) == ']') { i++; return list; }
            while (true) {
                list.add(value());
                ws();
                char c = s.charAt(i++);
                if (c == ']') return list;
                if (c != ',') throw error("expected ',' or ']'");
            }
        }

        private String string() {
            if (s.charAt(i) != '"') throw error("expected a string");
            StringBuilder out = new StringBuilder();
            i++;
            while (true) {
                char c = s.charAt(i++);
                if (c == '"') return out.toString();
                if (c != '\\') { out.append(c); continue; }
                char e = s.charAt(i++);
                switch (e) {
                    case 'n' -> out.append('\n');
                    case 't' -> out.append('\t');
                    case 'r' -> out.append('\r');
                    case 'b' -> out.append('\b');
                    case 'f' -> out.append('\f');
                    case 'u' -> { out.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; }
                    default -> out.append(e);
                }
            }
        }
    }
}
