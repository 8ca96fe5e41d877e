// Code written to be unreadable. Recorded, not blocked, by the default policy: minified and
// generated code look alike; the decoded-and-executed cases are in encoded_exec.yar.

rule hex_escape_chain {
  meta:
    category = "obfuscation"
    severity = "medium"
    message = "a long chain of \\x escapes (text hidden from readers)"
  strings:
    $a = /(\\x[0-9a-fA-F]{2}){40,}/
  condition:
    not is_markdown and $a
}

rule char_code_chain {
  meta:
    category = "obfuscation"
    severity = "medium"
    message = "text assembled from character codes (String.fromCharCode, chr() chains)"
  strings:
    $js = /String\.fromCharCode\s*\(\s*[0-9]{2,3}(\s*,\s*[0-9]{2,3}){15,}/
    $py = /(chr\s*\(\s*[0-9]{2,3}\s*\)\s*\+\s*){10,}/
    $ps = /(\[char\]\s*[0-9]{2,3}\s*\+\s*){10,}/i
  condition:
    not is_markdown and any of them
}

rule dynamic_builtin_access {
  meta:
    category = "obfuscation"
    severity = "medium"
    message = "reaches exec/eval or os.system through indirection (getattr on builtins, __import__)"
  strings:
    $getattr = /getattr\s*\(\s*(__builtins__|builtins|__import__\s*\(\s*['"]builtins['"]\s*\))\s*,/
    $imp = /__import__\s*\(\s*['"](os|subprocess|pty|socket)['"]\s*\)\s*\.\s*(system|popen|Popen|call|spawn|run)\b/
    $globals = /globals\s*\(\s*\)\s*\[\s*['"]__builtins__['"]\s*\]/
  condition:
    not is_markdown and any of them
}
