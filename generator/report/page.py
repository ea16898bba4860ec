"""The HTML shell of a report: one self-contained file (inline CSS, inline SVG, a small vanilla-JS gallery
with filters and pages), nothing fetched from the network when it is viewed.

    html = render_page("My dataset", "3,040 rows", [Section("dist", "Distributions", body)], gallery=None)

Helpers for section bodies: :func:`esc`, :func:`table`, :func:`figure`, :func:`cards` (headline numbers).
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from html import escape
from typing import Any, Sequence

from generator.report.svg import Figure


@dataclass
class Section:
    id: str
    title: str
    body: str                                            # HTML
    figures: dict[str, Figure] = field(default_factory=dict)   # name -> figure worth a PNG (the card's picks)


@dataclass
class Gallery:
    """The rows the gallery pages through (JSON for the script) and their sprite sheets (JPEG bytes)."""
    data: dict[str, Any]
    sheets: list[bytes]


def esc(value: Any) -> str:
    return escape(str(value), quote=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric: Sequence[int] = (), raw: bool = False) -> str:
    """An HTML table; the columns numbered in ``numeric`` are right-aligned. ``raw``: cells are HTML already."""
    head = "".join(f'<th{" class=num" if k in numeric else ""}>{esc(h)}</th>' for k, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if k in numeric else ""}>{c if raw else esc(c)}</td>'
                                    for k, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(fig: Figure, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{fig.svg()}{cap}</figure>"


def cards(items: Sequence[tuple[str, str]]) -> str:
    """Headline numbers: (value, label) pairs in a row of boxes."""
    return '<div class="cards">' + "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>'
                                           for v, k in items) + "</div>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def thumb(index: int, sheet: int, x: int, y: int, label: str = "") -> str:
    """A tile of a sprite sheet as a link that opens its row in the gallery."""
    return (f'<a class="pick" href="#gallery" data-row="{index}" title="{esc(label)}">'
            f'<span class="th s{sheet}" style="background-position:-{x}px -{y}px"></span>#{index}</a>')


def _json_script(element_id: str, data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _sprite_css(sheets: Sequence[bytes]) -> str:
    return "".join(f".s{k}{{background-image:url(data:image/jpeg;base64,{base64.b64encode(b).decode()})}}\n"
                   for k, b in enumerate(sheets))


def render_page(title: str, subtitle: str, sections: Sequence[Section], gallery: Gallery | None = None) -> str:
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    sprites = _sprite_css(gallery.sheets) if gallery else ""
    data = _json_script("gallery-data", gallery.data) + f"<script>{GALLERY_JS}</script>" if gallery else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}{sprites}</style></head>"
            f'<body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p><nav>{nav}</nav></header>'
            f"<main>{body}</main>{data}</body></html>\n")


CSS = """
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;
background:#f6f6f4}header{background:#1f2a36;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 8px;color:#cfd8e3}nav a{color:#fff;margin-right:14px;font-size:13px;text-decoration:none;
border-bottom:1px dotted #8aa}main{max-width:1280px;margin:0 auto;padding:8px 20px 40px}
section{background:#fff;border:1px solid #e2e2de;border-radius:6px;margin:16px 0;padding:12px 18px}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:14px 0 6px}
figure{display:inline-block;margin:6px 12px 6px 0;vertical-align:top;max-width:100%}
figure svg{max-width:100%;height:auto}figcaption{font-size:12px;color:#666;max-width:560px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}th,td{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#666;font-size:12.5px;max-width:900px}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:4px 0 10px}
.card{border:1px solid #e2e2de;border-radius:6px;padding:6px 12px;min-width:120px;background:#fafaf8}
.card b{display:block;font-size:18px}.card span{font-size:12px;color:#666}.ok{color:#2e7d32}.bad{color:#c62828}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin:4px 0 10px}
.controls input[type=search]{width:240px}.controls select,.controls input,.controls button{font:inherit;padding:3px 6px}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.tile{border:1px solid #e2e2de;border-radius:5px;padding:6px;background:#fff;font-size:12px}
.tile.hit{outline:3px solid #f28e2b}.tile .t{font-weight:600;margin-top:4px}.tile .p{color:#666;font-size:11px}
.tile .m{margin-top:2px}.tile .d{color:#c62828;font-weight:600}.tile .f{color:#b26a00;font-size:11px}
.th{display:inline-block;width:80px;height:80px;background-repeat:no-repeat;background-color:#eee;border-radius:3px;
vertical-align:middle}.tile .th{display:block;margin:0 auto}
.pair{display:inline-flex;align-items:center;gap:6px;border:1px solid #eee;border-radius:5px;padding:4px 8px;
margin:4px;font-size:12px}.pick{color:#1f4e79;text-decoration:none;display:inline-flex;flex-direction:column;
align-items:center}.rowlinks{display:flex;flex-wrap:wrap;gap:2px 8px;font-size:12px}
"""

GALLERY_JS = r"""
(function(){
const D=JSON.parse(document.getElementById('gallery-data').textContent);
const S={q:'',cat:'',split:'',disc:false,flag:false,page:0};
const $=id=>document.getElementById(id);
const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'})[c]);
const money=v=>D.currency+' '+Math.round(v).toLocaleString('en-US');
function ok(r){
  const p=D.paths[r[3]];
  if(S.q){const q=S.q.trim().toLowerCase();
    if(q[0]==='#'){if(String(r[0])!==q.slice(1))return false;}
    else if(r[2].toLowerCase().indexOf(q)<0&&p.join(' ').toLowerCase().indexOf(q)<0)return false;}
  if(S.cat){const k=+S.cat[0],v=S.cat.slice(2);
    if(k===3?(p[1]+' / '+p[2])!==v:p[k-1]!==v)return false;}
  if(S.split&&D.splits[r[1]]!==S.split)return false;
  if(S.disc&&!r[6])return false;
  if(S.flag&&!r[7])return false;
  return true;}
function tile(r,i){
  const p=D.paths[r[3]],k=i%D.per_sheet,sh=Math.floor(i/D.per_sheet);
  const x=(k%D.cols)*D.tile,y=Math.floor(k/D.cols)*D.tile;
  const off=r[6]&&r[4]>0?' <span class="d">-'+Math.round(100*(1-r[5]/r[4]))+'%</span>':'';
  const fl=r[7]?'<div class="f">flagged: '+esc(D.flag_names.filter((n,b)=>r[7]&(1<<b)).join(', '))+'</div>':'';
  return '<div class="tile'+(S.q==='#'+r[0]?' hit':'')+'" data-row="'+r[0]+'"><span class="th s'+sh+
    '" style="background-position:-'+x+'px -'+y+'px"></span><div class="t">'+esc(r[2])+'</div><div class="p">'+
    esc(p.join(' › '))+' · '+esc(D.splits[r[1]])+' #'+r[0]+'</div><div class="m">'+money(r[5])+
    (r[6]?' <s>'+money(r[4])+'</s>':'')+off+'</div>'+fl+'</div>';}
function render(){
  const hits=[];D.rows.forEach((r,i)=>{if(ok(r))hits.push(i);});
  const pages=Math.max(1,Math.ceil(hits.length/D.per_page));
  S.page=Math.min(Math.max(S.page,0),pages-1);
  const shown=hits.slice(S.page*D.per_page,(S.page+1)*D.per_page);
  $('grid').innerHTML=shown.map(i=>tile(D.rows[i],i)).join('');
  $('count').textContent=hits.length.toLocaleString('en-US')+' of '+D.rows.length.toLocaleString('en-US')+' rows';
  $('pageno').textContent='page '+(S.page+1)+' / '+pages;
  $('prev').disabled=S.page===0;$('next').disabled=S.page>=pages-1;}
function sync(){$('q').value=S.q;$('cat').value=S.cat;$('split').value=S.split;$('disc').checked=S.disc;
  if($('flag'))$('flag').checked=S.flag;}
function fromHash(){const h=new URLSearchParams(location.hash.slice(1));
  ['q','cat','split'].forEach(k=>{if(h.has(k))S[k]=h.get(k);});
  if(h.has('disc'))S.disc=h.get('disc')==='1';if(h.has('flag'))S.flag=h.get('flag')==='1';
  if(h.has('page'))S.page=(+h.get('page')||1)-1;}
const cat=$('cat');D.cat_options.forEach(o=>{const e=document.createElement('option');e.value=o[0];e.textContent=o[1];cat.appendChild(e);});
$('q').addEventListener('input',e=>{S.q=e.target.value;S.page=0;render();});
cat.addEventListener('change',e=>{S.cat=e.target.value;S.page=0;render();});
$('split').addEventListener('change',e=>{S.split=e.target.value;S.page=0;render();});
$('disc').addEventListener('change',e=>{S.disc=e.target.checked;S.page=0;render();});
if($('flag'))$('flag').addEventListener('change',e=>{S.flag=e.target.checked;S.page=0;render();});
$('prev').addEventListener('click',()=>{S.page--;render();});
$('next').addEventListener('click',()=>{S.page++;render();});
$('reset').addEventListener('click',()=>{Object.assign(S,{q:'',cat:'',split:'',disc:false,flag:false,page:0});sync();render();});
document.addEventListener('click',e=>{const a=e.target.closest('a[data-row],button[data-flag]');if(!a)return;
  e.preventDefault();Object.assign(S,{q:a.dataset.row?'#'+a.dataset.row:'',cat:'',split:'',disc:false,
  flag:!!a.dataset.flag,page:0});sync();render();$('gallery').scrollIntoView();});
if(location.hash.length>1&&location.hash.indexOf('=')>0)fromHash();
sync();render();
})();
"""
