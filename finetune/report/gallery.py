"""The gallery of test predictions: one row a test row evaluated (thumbnail, truth, answer, parse status,
error), paged, filterable and sortable by error by a small inline script over inline JSON."""
from __future__ import annotations

import json
import math
from typing import Any

from generator.api import report_page as page

from .folder import RunFolder

PER_PAGE = 50


def rel_error(p: dict[str, Any]) -> float | None:
    """|answered - true| / true full price, or None without a price in the answer."""
    a, t = p.get("full_price"), p.get("true_full_price")
    if not isinstance(a, (int, float)) or not isinstance(t, (int, float)) or not t:
        return None
    return abs(a - t) / abs(t)


def gallery_rows(run: RunFolder) -> list[list[Any]]:
    """[index, thumbnail URI or "", truth, answer text (None: image unreadable), parsed, category right,
    relative price error or None] a prediction, in test-row order."""
    out = []
    for p in run.predictions:
        err = rel_error(p)
        out.append([p.get("index"), run.thumbs.get(p.get("index"), ""), p.get("truth") or "", p.get("prediction"),
                    bool(p.get("parsed")), bool(p.get("category_correct")),
                    None if err is None or not math.isfinite(err) else round(err, 4)])
    return out


def gallery(run: RunFolder) -> page.Section:
    data = {"rows": gallery_rows(run), "per_page": PER_PAGE}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    why = run.images_note or ("" if run.thumbs else "no images")
    controls = ('<div class="controls"><label>show <select id="pf"><option value="">every row</option>'
                '<option value="wrong">category wrong</option><option value="right">category right</option>'
                '<option value="unparsed">unparsed</option></select></label>'
                '<label>sort by <select id="ps"><option value="row">test row</option>'
                '<option value="err_desc" selected>price error, largest first</option>'
                '<option value="err_asc">price error, smallest first</option></select></label>'
                '<button id="pprev">&lsaquo; prev</button><span id="ppage"></span><button id="pnext">next &rsaquo;</button>'
                '<span id="pcount"></span></div>')
    head = "<tr><th>row</th><th>image</th><th>truth</th><th>answer</th><th>status</th><th class=num>price error</th></tr>"
    body = (page.note(f"every evaluated test row ({len(run.predictions):,}); price error = |answered - true| / true, "
                      "rows without a price in the answer sort as the largest")
            + (page.note(f"images: {why}") if why else "") + controls
            + f'<table class="preds"><thead>{head}</thead><tbody id="pbody"></tbody></table>'
            + '<noscript><p class="note">the gallery needs JavaScript</p></noscript>'
            + f'<style>{CSS}</style><script type="application/json" id="pred-data">{text}</script>'
            + f"<script>{JS}</script>")
    return page.Section("gallery", "Test predictions", body)


CSS = (".preds img{width:72px;height:72px;object-fit:contain;background:#eee;border-radius:3px}"
       ".preds td{font-size:12.5px}.preds .noimg{display:inline-block;width:72px;height:72px;background:#eee;"
       "border-radius:3px}.st-ok{color:#2e7d32}.st-bad{color:#c62828}.st-un{color:#b26a00}")

JS = r"""
(function(){
const D=JSON.parse(document.getElementById('pred-data').textContent);
const S={f:'',s:'err_desc',page:0};const $=id=>document.getElementById(id);
const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'})[c]);
const key=r=>r[6]===null?Infinity:r[6];
function keep(r){if(S.f==='wrong')return r[4]&&!r[5];if(S.f==='right')return r[5];if(S.f==='unparsed')return !r[4];return true;}
function status(r){if(r[3]===null)return '<span class="st-un">image unreadable</span>';
  if(!r[4])return '<span class="st-un">unparsed</span>';
  return r[5]?'<span class="st-ok">category right</span>':'<span class="st-bad">category wrong</span>';}
function tr(r){const img=r[1]?'<img alt="test row '+r[0]+'" src="'+r[1]+'">':'<span class="noimg"></span>';
  const err=r[6]===null?'-':(100*r[6]).toFixed(1)+'%';
  return '<tr data-row="'+r[0]+'"><td class=num>'+r[0]+'</td><td>'+img+'</td><td>'+esc(r[2])+'</td><td>'+
    esc(r[3]===null?'':r[3])+'</td><td>'+status(r)+'</td><td class=num>'+err+'</td></tr>';}
function render(){
  let rows=D.rows.filter(keep);
  if(S.s!=='row'){const sign=S.s==='err_desc'?-1:1;
    rows=rows.slice().sort((a,b)=>{const x=key(a),y=key(b);return x===y?a[0]-b[0]:(x<y?-sign:sign);});}
  const pages=Math.max(1,Math.ceil(rows.length/D.per_page));S.page=Math.min(Math.max(S.page,0),pages-1);
  $('pbody').innerHTML=rows.slice(S.page*D.per_page,(S.page+1)*D.per_page).map(tr).join('');
  $('ppage').textContent='page '+(S.page+1)+' / '+pages;
  $('pcount').textContent=rows.length+' of '+D.rows.length+' rows';
  $('pprev').disabled=S.page===0;$('pnext').disabled=S.page>=pages-1;}
const h=new URLSearchParams(location.hash.slice(1));
if(h.has('show'))S.f=h.get('show');if(h.has('sort'))S.s=h.get('sort');if(h.has('page'))S.page=(+h.get('page')||1)-1;
$('pf').value=S.f;$('ps').value=S.s;
$('pf').addEventListener('change',e=>{S.f=e.target.value;S.page=0;render();});
$('ps').addEventListener('change',e=>{S.s=e.target.value;S.page=0;render();});
$('pprev').addEventListener('click',()=>{S.page--;render();});
$('pnext').addEventListener('click',()=>{S.page++;render();});
render();
})();
"""
