package wire

// validJSON reports whether p is JSON: exactly json.Valid(p) (one value,
// whitespace around it, at most maxDepth arrays and objects nested), in a
// fraction of its time. The encoder checks every payload it writes as it
// is, and json.Valid's scanner, a call through a function value a byte, was
// then most of the cost of encoding a down message. FuzzValidJSON holds it
// to json.Valid.
func validJSON(p []byte) bool {
	i, ok := validValue(p, SkipSpace(p, 0), 0)
	return ok && SkipSpace(p, i) == len(p)
}

// maxDepth is encoding/json's limit of nested arrays and objects.
const maxDepth = 10000

// SkipSpace is the index of the first byte at or after i in p that is not
// JSON whitespace (space, tab, newline, carriage return). The hand readers
// of JSON in shared (records.DecodeFlat, httpapi's create body) use it too.
func SkipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}

// validValue checks the value starting at p[i] (depth arrays and objects
// deep) and returns the index after it.
func validValue(p []byte, i, depth int) (int, bool) {
	if i >= len(p) {
		return i, false
	}
	switch c := p[i]; {
	case c == '"':
		return validString(p, i)
	case c == '{':
		if depth++; depth > maxDepth {
			return i, false
		}
		i = SkipSpace(p, i+1)
		if i < len(p) && p[i] == '}' {
			return i + 1, true
		}
		for {
			if i >= len(p) || p[i] != '"' {
				return i, false
			}
			var ok bool
			if i, ok = validString(p, i); !ok {
				return i, false
			}
			if i = SkipSpace(p, i); i >= len(p) || p[i] != ':' {
				return i, false
			}
			if i, ok = validValue(p, SkipSpace(p, i+1), depth); !ok {
				return i, false
			}
			if i = SkipSpace(p, i); i >= len(p) {
				return i, false
			}
			switch p[i] {
			case '}':
				return i + 1, true
			case ',':
				i = SkipSpace(p, i+1)
			default:
				return i, false
			}
		}
	case c == '[':
		if depth++; depth > maxDepth {
			return i, false
		}
		i = SkipSpace(p, i+1)
		if i < len(p) && p[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = validValue(p, i, depth); !ok {
				return i, false
			}
			if i = SkipSpace(p, i); i >= len(p) {
				return i, false
			}
			switch p[i] {
			case ']':
				return i + 1, true
			case ',':
				i = SkipSpace(p, i+1)
			default:
				return i, false
			}
		}
	case c == '-' || c >= '0' && c <= '9':
		return validNumber(p, i)
	case c == 't':
		return i + 4, len(p) >= i+4 && string(p[i:i+4]) == "true"
	case c == 'f':
		return i + 5, len(p) >= i+5 && string(p[i:i+5]) == "false"
	case c == 'n':
		return i + 4, len(p) >= i+4 && string(p[i:i+4]) == "null"
	}
	return i, false
}

// validString checks the string starting at p[i] ('"'): no control
// characters, only JSON's escapes (any other byte passes, as for
// json.Valid, which does not check UTF-8).
func validString(p []byte, i int) (int, bool) {
	for i++; i < len(p); i++ {
		switch c := p[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case c == '\\':
			if i++; i >= len(p) {
				return i, false
			}
			switch p[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) || !isHex(p[i+3]) || !isHex(p[i+4]) {
					return i, false
				}
				i += 4
			default:
				return i, false
			}
		}
	}
	return i, false
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// validNumber checks the number starting at p[i]: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func validNumber(p []byte, i int) (int, bool) {
	digits := func() bool {
		start := i
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			i++
		}
		return i > start
	}
	if p[i] == '-' {
		i++
	}
	switch {
	case i < len(p) && p[i] == '0':
		i++
	case !digits():
		return i, false
	}
	if i < len(p) && p[i] == '.' {
		i++
		if !digits() {
			return i, false
		}
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		i++
		if i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		if !digits() {
			return i, false
		}
	}
	return i, true
}
