// A kube-stream-runner producer in Go: validate a job message against
// docs/message.schema.json, then XADD it to a stream (field "payload"), as any producer
// may (docs/producer.md). A refused message is printed one "field: problem" per line, the
// field spelt as the runner names it (job.env[0].name), and nothing is sent.
//
//	ksr-go-example -schema docs/message.schema.json -redis redis://127.0.0.1:6379/0 \
//	    -stream ksr:jobs:default message.json
//
// Exit codes: 0 sent (the entry id on stdout), 1 refused by the schema, 2 usage or I/O.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

var printer = message.NewPrinter(language.English)

func main() {
	schemaPath := flag.String("schema", "docs/message.schema.json", "the message schema")
	redisURL := flag.String("redis", envOr("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL")
	stream := flag.String("stream", "ksr:jobs:default", "stream to XADD to")
	check := flag.Bool("check", false, "validate only, send nothing")
	batch := flag.Bool("batch", false, "validate JSON lines from stdin; print for each the JSON array of fields refused (null: valid)")
	flag.Parse()
	if *batch {
		os.Exit(runBatch(*schemaPath))
	}
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: ksr-go-example [-schema F] [-redis URL] [-stream S] [-check] MESSAGE.json|-")
		os.Exit(2)
	}
	raw, err := readArg(flag.Arg(0))
	if err != nil {
		fail(2, "message: %v", err)
	}
	schema, err := compile(*schemaPath)
	if err != nil {
		fail(2, "schema: %v", err)
	}
	problems, err := validate(schema, raw)
	if err != nil {
		fail(1, "payload: %v", err)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, p.field+": "+p.text)
		}
		os.Exit(1)
	}
	if *check {
		fmt.Println("valid")
		return
	}
	id, err := send(*redisURL, *stream, raw)
	if err != nil {
		fail(2, "redis: %v", err)
	}
	fmt.Println(id)
}

// runBatch is for checking the example against the runner (tests/integration/test_go_producer.py).
func runBatch(schemaPath string) int {
	schema, err := compile(schemaPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "schema: %v\n", err)
		return 2
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		problems, err := validate(schema, in.Bytes())
		if err != nil {
			problems = []refusal{{"payload", err.Error()}}
		}
		var names []string
		for _, p := range problems {
			names = append(names, p.field)
		}
		if err := out.Encode(names); err != nil {
			return 2
		}
	}
	return 0
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(code)
}

func readArg(arg string) ([]byte, error) {
	if arg == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(arg)
}

func compile(path string) (*jsonschema.Schema, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return jsonschema.NewCompiler().Compile(abs)
}

type refusal struct{ field, text string }

// validate returns the refusals sorted by field; err when not JSON.
func validate(schema *jsonschema.Schema, raw []byte) ([]refusal, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	err = schema.Validate(doc)
	var verr *jsonschema.ValidationError
	if err == nil {
		return nil, nil
	} else if !errors.As(err, &verr) {
		return nil, err
	}
	seen := map[refusal]bool{}
	var out []refusal
	for _, leaf := range leaves(verr) {
		for _, field := range fields(doc, leaf) {
			r := refusal{field, problem(leaf)}
			if !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].field < out[j].field || out[i].field == out[j].field && out[i].text < out[j].text
	})
	return out, nil
}

// leaves are the errors that say what is wrong (not "allOf failed"); a bad property name
// is a leaf of its own, whatever its causes.
func leaves(e *jsonschema.ValidationError) []*jsonschema.ValidationError {
	if _, ok := e.ErrorKind.(*kind.PropertyNames); ok || len(e.Causes) == 0 {
		return []*jsonschema.ValidationError{e}
	}
	var out []*jsonschema.ValidationError
	for _, c := range e.Causes {
		out = append(out, leaves(c)...)
	}
	return out
}

// fields names what the runner would name: the value's path, or for a missing member or a
// bad resource name the member under the object the schema blames.
func fields(doc any, e *jsonschema.ValidationError) []string {
	base := dotted(doc, e.InstanceLocation)
	join := func(name string) string {
		if base == "payload" {
			return name
		}
		return base + "." + name
	}
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		var out []string
		for _, name := range k.Missing {
			out = append(out, join(name))
		}
		return out
	case *kind.PropertyNames:
		// Its InstanceLocation is not the object's in v6.0.3: read the object's path off
		// the keyword's schema location (.../properties/job/properties/resources/...).
		return []string{fromSchemaLocation(e.SchemaURL) + "." + k.Property}
	}
	return []string{base}
}

// fromSchemaLocation is the instance path a schema location under "properties" names.
func fromSchemaLocation(url string) string {
	_, fragment, _ := strings.Cut(url, "#")
	parts := strings.Split(strings.Trim(fragment, "/"), "/")
	var names []string
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == "properties" {
			names = append(names, parts[i+1])
			i++
		}
	}
	return strings.Join(names, ".")
}

// dotted spells an instance location as the runner does: job.env[0].name; the top is "payload".
func dotted(doc any, location []string) string {
	var b strings.Builder
	node := doc
	for _, part := range location {
		switch v := node.(type) {
		case []any:
			fmt.Fprintf(&b, "[%s]", part)
			var i int
			fmt.Sscanf(part, "%d", &i)
			if i >= 0 && i < len(v) {
				node = v[i]
			}
		case map[string]any:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(part)
			node = v[part]
		}
	}
	if b.Len() == 0 {
		return "payload"
	}
	return b.String()
}

func problem(e *jsonschema.ValidationError) string {
	text := e.ErrorKind.LocalizedString(printer)
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	return text
}

// send XADDs the message compacted (the runner reads any JSON; compact is what ksr submit writes).
func send(url, stream string, raw []byte) (string, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return "", err
	}
	client := redis.NewClient(opts)
	defer client.Close()
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"payload": compact.String()}}).Result()
}
