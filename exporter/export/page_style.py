"""The status page's style sheet: one block, no external resources (the page must work
where nothing but the exporter can be reached)."""

CSS = """
:root{--bg:#f5f6f8;--card:#fff;--ink:#1c2430;--mute:#5d6b7e;--line:#dfe3ea;--ok:#1a7f37;
--bad:#c2261b;--warn:#9a6700;--accent:#3056d3}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,sans-serif;background:var(--bg);
color:var(--ink)}header{background:#17202e;color:#fff;padding:14px 24px}header h1{margin:0;
font-size:19px}header p{margin:4px 0 0;color:#c5cedb}.demo{background:#fff4d6;color:#5c4100;
padding:10px 24px;border-bottom:1px solid #ecd9a0}main{display:grid;grid-template-columns:
repeat(auto-fit,minmax(420px,1fr));gap:16px;padding:16px 24px}section{background:var(--card);
border:1px solid var(--line);border-radius:8px;padding:12px 16px}section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 10px}h2 small,h3 small{color:var(--mute);font-weight:400}
h3{font-size:14px;margin:0 0 6px}table{border-collapse:collapse;width:100%}td,th{text-align:left;
padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}th{color:var(--mute);
font-weight:500}.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));
gap:8px}.fig{border:1px solid var(--line);border-radius:6px;padding:6px 10px}.fig span{display:
block;color:var(--mute);font-size:12px}.fig b{font-size:17px}.fig.absent b{color:#a0a8b4}
.ok{color:var(--ok)}.bad{color:var(--bad);font-weight:600}.why{color:var(--mute)}
.roofline{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.roofline .figs{flex:1;
min-width:300px}svg{max-width:100%;height:auto}.plot{fill:#fbfcfe;stroke:var(--line)}
.grid{stroke:#edf0f4}.tick{font-size:10px;fill:var(--mute)}.axis{font-size:11px;fill:var(--mute)}
.roof{fill:none;stroke:var(--accent);stroke-width:2.5}.ridge,.batch{stroke:#9aa5b5;
stroke-dasharray:4 3}.spread{stroke:var(--bad);stroke-width:3;
stroke-linecap:round;opacity:.45}.ceiling{fill:#fff;stroke:var(--accent);stroke-width:2}.measured{fill:
var(--bad)}.note{font-size:11px;fill:var(--ink)}.issue{border-left:4px solid var(--bad);
padding:6px 12px;margin:0 0 10px;background:#fff8f7}.issue p{margin:4px 0}tr.significant td{
color:var(--bad)}tr.skipped td{color:var(--warn)}.verdict{font-size:16px;font-weight:600}
.verdict.worse{color:var(--bad)}.verdict.better{color:var(--ok)}details summary{cursor:pointer;
color:var(--mute);margin:8px 0}footer{padding:0 24px 16px;color:var(--mute)}a{color:var(--accent)}
"""
