
BlogitsJ(ъF├BpВB█~VBА≥┴AычВа╙ц╕}V@S<ла╞╟╝Bк▄SA