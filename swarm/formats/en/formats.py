"""Date and time formats of the admin (English): ISO-like, with seconds.

Django's English defaults show "Nov. 27, 2026, 8:20 p.m.": a page of rows
within the same minute then has no visible order. Every time in the admin
reads `2026-11-27 20:20:14` instead (settings.FORMAT_MODULE_PATH).
"""
DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
MONTH_DAY_FORMAT = "F j"
YEAR_MONTH_FORMAT = "F Y"
FIRST_DAY_OF_WEEK = 1
