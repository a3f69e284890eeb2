package shell

func quote(s string) string { return windowsQuote(s) }
