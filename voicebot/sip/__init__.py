"""The phone service on PJSIP (pjsua2): only modules in this package import pjsua2.

``settings`` holds the typed ``[sip]`` settings and imports nothing of PJSIP; ``service``
answers calls (``open_sip_service``), ``client`` is the test caller (``voicebot call``).
"""
