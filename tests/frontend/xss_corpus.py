"""XSS payloads placed in prompts and responses, shared by the unit tests of
render_markdown and the browser test that checks they stay inert in the real page."""

from __future__ import annotations

XSS_PAYLOADS: list[str] = [
    "<script>alert('xss-1')</script>",
    "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert('xss-3')>",
    "<svg onload=alert('xss-4')>",
    "<svg><script>alert('xss-5')</script></svg>",
    "<iframe src=\"javascript:alert('xss-6')\"></iframe>",
    "<body onload=alert('xss-7')>",
    '<style>body{display:none}</style><p style="color:red">styled</p>',
    "[click me](javascript:alert('xss-9'))",
    "[click](JaVaScRiPt:alert('xss-10'))",
    "[click](javascript&#58;alert('xss-11'))",
    "[click](&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;:alert('xss-12'))",
    "[click](java\tscript:alert('xss-13'))",
    "[click](%6A%61%76%61%73%63%72%69%70%74:alert('xss-14'))",
    "<a href=\"javascript:alert('xss-15')\">raw link</a>",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgneHNzLTE2Jyk8L3NjcmlwdD4=)",
    "![img](javascript:alert('xss-17'))",
    "![x](x \"onerror=alert('xss-18')\")",
    "<details open ontoggle=alert('xss-19')>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert('xss-20')>",
    "[link](<javascript:alert('xss-21')>)",
    "[ref]\n\n[ref]: javascript:alert('xss-22')",
    "<object data=\"javascript:alert('xss-23')\"></object>",
    "<embed src=\"javascript:alert('xss-24')\">",
    "```html\n<script>alert('xss-25')</script>\n```",
    "```\" onmouseover=\"alert('xss-26')\n code\n```",
    "<form action=\"javascript:alert('xss-27')\"><button>go</button></form>",
    "<input autofocus onfocus=alert('xss-28')>",
    "[x](vbscript:msgbox('xss-29'))",
    "<a href=\"&#x6A;avascript:alert('xss-30')\">entity link</a>",
    '<meta http-equiv="refresh" content="0;url=javascript:alert(\'xss-31\')">',
    "| a | b |\n|---|---|\n"
    "| <img src=x onerror=alert('xss-32')> | [t](javascript:alert(32)) |",
    "<base href=\"javascript:alert('xss-33')//\">",
    "<link rel=stylesheet href=https://evil.example/x.css>",
    "`<script>alert('xss-35')</script>`",
]
