// A verifier of the Custos audit log built on the Go module mirror's own transparency-log code,
// golang.org/x/mod/sumdb (Debian's golang-golang-x-mod-dev): `note` checks C2SP signed notes,
// `tlog` checks RFC 6962 inclusion and consistency proofs. Nothing here comes from Custos but
// the steps of docs/verify.md, so a log this accepts is one an outsider's standard tools accept.
//
// Usage: verify_go BASE TOKEN VKEY EARLIER_CHECKPOINT RECORD_JSON...
//
// It checks the earlier checkpoint (kept by the caller) and the latest one against the pinned
// key, the consistency proof between them, and for each record (as the API or a SIEM showed
// it) its leaf hash, rebuilt here, against its inclusion proof and that proof's checkpoint.
// Prints "verified ..." and exits 0, or names the first failure and exits 1.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type checkpoint struct {
	size int64
	root tlog.Hash
}

func main() {
	if len(os.Args) < 6 {
		fail("usage: verify_go BASE TOKEN VKEY EARLIER_CHECKPOINT RECORD_JSON...")
	}
	base, token, vkey := os.Args[1], os.Args[2], os.Args[3]
	verifier, err := note.NewVerifier(vkey)
	check(err, "the pinned key")
	known := note.VerifierList(verifier)

	earlierText, err := os.ReadFile(os.Args[4])
	check(err, "reading the earlier checkpoint")
	earlier := open(earlierText, known, "the earlier checkpoint")
	latest := open(get(base, token, "/api/audit/checkpoint"), known, "the latest checkpoint")

	var consistency struct {
		From, To int64
		Hashes   []tlog.Hash
	}
	query := fmt.Sprintf("/api/audit/proofs/consistency?from=%d&to=%d", earlier.size, latest.size)
	check(json.Unmarshal(get(base, token, query), &consistency), "the consistency proof")
	check(tlog.CheckTree(consistency.Hashes, latest.size, latest.root, earlier.size, earlier.root),
		"the consistency proof")

	for _, file := range os.Args[5:] {
		shown, err := os.ReadFile(file)
		check(err, "reading "+file)
		var record map[string]interface{}
		decoder := json.NewDecoder(bytes.NewReader(shown))
		decoder.UseNumber()
		check(decoder.Decode(&record), file)
		var canonical bytes.Buffer
		check(writeCanonical(&canonical, record), file)
		leaf := tlog.RecordHash(canonical.Bytes())

		id, _ := record["Id"].(string)
		var inclusion struct {
			LeafIndex  int64
			TreeSize   int64
			LeafHash   tlog.Hash
			Hashes     []tlog.Hash
			Checkpoint string
		}
		query := "/api/audit/proofs/inclusion?id=" + url.QueryEscape(id)
		check(json.Unmarshal(get(base, token, query), &inclusion), "the inclusion proof of "+id)
		signed := open([]byte(inclusion.Checkpoint), known, "the checkpoint of "+id+"'s proof")
		if signed.size != inclusion.TreeSize {
			fail(fmt.Sprintf("the proof of %s is for %d events, its checkpoint for %d", id, inclusion.TreeSize, signed.size))
		}
		if leaf != inclusion.LeafHash {
			fail(fmt.Sprintf("record %s as shown hashes to %v, the log holds %v", id, leaf, inclusion.LeafHash))
		}
		check(tlog.CheckRecord(inclusion.Hashes, signed.size, signed.root, inclusion.LeafIndex, leaf),
			"the inclusion proof of "+id)
	}
	fmt.Printf("verified %d records; checkpoints %d and %d consistent\n", len(os.Args)-5, earlier.size, latest.size)
}

// open verifies a signed note with the pinned key and reads its body: origin, tree size, root.
func open(text []byte, known note.Verifiers, what string) checkpoint {
	n, err := note.Open(text, known)
	check(err, what)
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != n.Sigs[0].Name {
		fail(what + ": not a checkpoint of the pinned key's log")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	check(err, what+": its tree size")
	root, err := tlog.ParseHash(lines[2])
	check(err, what+": its root")
	return checkpoint{size, root}
}

func get(base, token, path string) []byte {
	request, err := http.NewRequest("GET", base+path, nil)
	check(err, path)
	request.Header.Set("Authorization", "Bearer "+token)
	response, err := http.DefaultClient.Do(request)
	check(err, path)
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	check(err, path)
	if response.StatusCode != 200 {
		fail(fmt.Sprintf("%s answered %d: %s", path, response.StatusCode, body))
	}
	return body
}

// writeCanonical writes RFC 8785 canonical JSON for what this verifier can write exactly with
// Go's standard library (whole numbers, object names in ASCII, strings without the characters
// Go escapes differently); anything else is refused rather than guessed at.
func writeCanonical(out *bytes.Buffer, value interface{}) error {
	switch v := value.(type) {
	case nil:
		out.WriteString("null")
	case bool:
		out.WriteString(strconv.FormatBool(v))
	case json.Number:
		if _, err := strconv.ParseInt(string(v), 10, 64); err != nil {
			return fmt.Errorf("the number %s: this verifier checks whole numbers only", v)
		}
		out.WriteString(string(v))
	case string:
		if strings.ContainsAny(v, "\b\f\u2028\u2029") {
			return fmt.Errorf("the string %q: a character this verifier does not escape as JCS does", v)
		}
		encoder := json.NewEncoder(out)
		encoder.SetEscapeHTML(false)
		if err := encoder.Encode(v); err != nil {
			return err
		}
		out.Truncate(out.Len() - 1) // the encoder's newline
	case []interface{}:
		out.WriteByte('[')
		for i, item := range v {
			if i > 0 {
				out.WriteByte(',')
			}
			if err := writeCanonical(out, item); err != nil {
				return err
			}
		}
		out.WriteByte(']')
	case map[string]interface{}:
		names := make([]string, 0, len(v))
		for name := range v {
			for _, c := range name {
				if c > 0x7f {
					return fmt.Errorf("the name %q: this verifier sorts ASCII names only", name)
				}
			}
			names = append(names, name)
		}
		sort.Strings(names)
		out.WriteByte('{')
		for i, name := range names {
			if i > 0 {
				out.WriteByte(',')
			}
			if err := writeCanonical(out, name); err != nil {
				return err
			}
			out.WriteByte(':')
			if err := writeCanonical(out, v[name]); err != nil {
				return err
			}
		}
		out.WriteByte('}')
	default:
		return fmt.Errorf("a value of type %T", value)
	}
	return nil
}

func check(err error, what string) {
	if err != nil {
		fail(what + ": " + err.Error())
	}
}

func fail(why string) {
	fmt.Println("FAILED " + why)
	os.Exit(1)
}
