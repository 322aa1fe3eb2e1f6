"""The page's own JavaScript: what must happen in the browser, not on the server.

The owner secret lives in the browser's localStorage, so only this browser sees and controls its
jobs; the address bar keeps the shown job (?job=ID), so a reload shows it again.
"""

# This browser's owner secret: kept in localStorage, made once (192 random bits, URL-safe base64).
OWNER_JS = ("() => { const key = 'shapeinv-owner'; let token = window.localStorage.getItem(key); "
            "if (!token || !/^[A-Za-z0-9_-]{22,128}$/.test(token)) { "
            "const bytes = crypto.getRandomValues(new Uint8Array(24)); "
            "token = btoa(String.fromCharCode(...bytes)).replace(/\\+/g, '-').replace(/\\//g, '_'); "
            "window.localStorage.setItem(key, token); } return token; }")
# Put ?job=ID in the address bar, so reloading the page shows the job again (and no shared run's).
JOB_LINK_JS = ("(id) => { if (id) { const u = new URL(window.location.href); u.searchParams.delete('share'); "
               "u.searchParams.set('job', id); window.history.replaceState(null, '', u); } }")
# The whole read-only link from its secret: this page's address with ?share=SECRET.
SHARE_LINK_JS = "(token) => token ? new URL('?share=' + encodeURIComponent(token), window.location.href).href : ''"
SCROLL_TO_EDIT = "() => document.getElementById('edit')?.scrollIntoView({behavior: 'smooth'})"
